# Sourced by scripts/demo.sh and scripts/test.sh: create .venv with the first python3 that
# can (Debian's python3 needs the python3-venv package for that: installed on demand).
ensure_venv() {
    local python="${PYTHON:-python3}"
    [ -x .venv/bin/python ] && return 0
    echo "== creating .venv"
    if ! "$python" -m venv .venv 2>/dev/null; then
        rm -rf .venv
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        echo "== installing python3-venv (Debian/Ubuntu)"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
        "$python" -m venv .venv
    fi
}
