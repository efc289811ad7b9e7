/* A stand-in for linux-gpib's libgpib.so.0, built by the tests with `cc -shared`.
 *
 * It exports the NI-488 calls aiotmc's linux-gpib transport uses (ibdev, ibonl, ibtmo,
 * ibeot, ibwrt, ibrd, ibrsp, ibclr, ibtrg, ibloc, ibwait, ibsic, ibsre, the thread-local
 * ThreadIbsta/ThreadIberr/ThreadIbcnt/ThreadIbcntl and the global ibsta/iberr/ibcnt/ibcntl)
 * and forwards each device call over a Unix socket ($AIOTMC_GPIB_STUB) to a simulated
 * bus in the test process (tests/transports/gpib/stub_bus.py), so that the calls block
 * for real (ibrd waits for the answer, bounded by the descriptor's timeout) while the
 * devices are aiotmc's simulated instruments.
 *
 * Wire format, little-endian. Request: u8 op, u8 pad, u8 sad (255: none), u8 flags
 * (bit 0: EOI), u32 timeout in ms (0: none), u32 length, then length bytes. Answer:
 * i32 iberr (-1: no error), u32 flags (1: END, 2: RQS, 4: timed out), u32 length, bytes.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define ERR 0x8000
#define TIMO 0x4000
#define END 0x2000
#define RQS 0x800
#define CMPL 0x100
#define EDVR 0
#define EARG 4
#define EABO 6
#define ENEB 7
#define MAXUD 64

int ibsta, iberr, ibcnt;
long ibcntl;
static __thread int t_sta, t_err;
static __thread long t_cnt;

int ThreadIbsta(void) { return t_sta; }
int ThreadIberr(void) { return t_err; }
int ThreadIbcnt(void) { return (int)t_cnt; }
long ThreadIbcntl(void) { return t_cnt; }

static const unsigned timeout_ms[] = {0, 1, 1, 1, 1, 1, 3, 10, 30, 100, 300, 1000,
                                      3000, 10000, 30000, 100000, 300000, 1000000};

struct dev {
    int used, fd, pad, sad, tmo, eot;
    pthread_mutex_t lock;
};
static struct dev devs[MAXUD];
static pthread_mutex_t table = PTHREAD_MUTEX_INITIALIZER;

static int set(int sta, int err, long cnt) {
    t_sta = sta; t_err = err; t_cnt = cnt;
    ibsta = sta; iberr = err; ibcnt = (int)cnt; ibcntl = cnt;
    return sta;
}

static int fail(int err, long cnt) { return set(ERR, err, cnt); }

static struct dev *lookup(int ud) {
    if (ud < 0 || ud >= MAXUD || !devs[ud].used) return NULL;
    return &devs[ud];
}

static int transfer(int fd, void *buf, size_t n, int sending) {
    char *p = buf;
    while (n > 0) {
        ssize_t done = sending ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (done < 0 && errno == EINTR) continue;
        if (done <= 0) return -1;
        p += done; n -= (size_t)done;
    }
    return 0;
}

/* One request/answer; 0 on success (iberr/flags/length filled), -1 if the bus is gone. */
static int request(struct dev *d, char op, int flags, const void *data, uint32_t len,
                   void *out, uint32_t outmax, int32_t *err, uint32_t *rflags, uint32_t *rlen) {
    unsigned char head[12];
    uint32_t ms = timeout_ms[d->tmo];
    head[0] = (unsigned char)op; head[1] = (unsigned char)d->pad;
    head[2] = (unsigned char)d->sad; head[3] = (unsigned char)flags;
    memcpy(head + 4, &ms, 4); memcpy(head + 8, &len, 4);
    struct timeval tv = {0, 0};
    if (ms) { tv.tv_sec = ms / 1000 + 5; tv.tv_usec = (ms % 1000) * 1000; }
    setsockopt(d->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (transfer(d->fd, head, 12, 1) || (len && transfer(d->fd, (void *)data, len, 1)))
        return -1;
    unsigned char answer[12];
    if (transfer(d->fd, answer, 12, 0)) return -1;
    memcpy(err, answer, 4); memcpy(rflags, answer + 4, 4); memcpy(rlen, answer + 8, 4);
    uint32_t keep = *rlen < outmax ? *rlen : outmax;
    if (keep && transfer(d->fd, out, keep, 0)) return -1;
    for (uint32_t rest = *rlen - keep; rest > 0;) { /* never more than asked for */
        char scrap[256];
        uint32_t n = rest < sizeof scrap ? rest : sizeof scrap;
        if (transfer(d->fd, scrap, n, 0)) return -1;
        rest -= n;
    }
    *rlen = keep;
    return 0;
}

/* A call that moves no data: op, then the usual status. */
static int simple(int ud, char op, void *out, uint32_t outmax) {
    struct dev *d = lookup(ud);
    if (!d) return fail(EDVR, EBADF);
    int32_t err; uint32_t flags, len;
    pthread_mutex_lock(&d->lock);
    int bad = request(d, op, 0, NULL, 0, out, outmax, &err, &flags, &len);
    pthread_mutex_unlock(&d->lock);
    if (bad) return fail(EDVR, EPIPE);
    if (err >= 0) return set(ERR | (err == EABO ? TIMO : 0), err, 0);
    return set(CMPL | ((flags & 2) ? RQS : 0) | ((flags & 4) ? TIMO : 0), 0, len);
}

int ibdev(int minor, int pad, int sad, int tmo, int eot, int eos) {
    (void)eos;
    const char *path = getenv("AIOTMC_GPIB_STUB");
    if (minor != 0) { fail(ENEB, 0); return -1; }
    if (pad < 0 || pad > 30 || tmo < 0 || tmo > 17 || (sad != 0 && (sad < 96 || sad > 126))) {
        fail(EARG, 0); return -1;
    }
    if (!path) { fail(EDVR, ENOENT); return -1; }
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) { fail(EDVR, errno); return -1; }
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr)) {
        int e = errno; close(fd); fail(EDVR, e); return -1;
    }
    pthread_mutex_lock(&table);
    for (int ud = 0; ud < MAXUD; ud++) {
        if (!devs[ud].used) {
            devs[ud].used = 1; devs[ud].fd = fd; devs[ud].pad = pad;
            devs[ud].sad = sad ? sad - 96 : 255; devs[ud].tmo = tmo; devs[ud].eot = eot;
            pthread_mutex_init(&devs[ud].lock, NULL);
            pthread_mutex_unlock(&table);
            set(CMPL, 0, 0);
            return ud;
        }
    }
    pthread_mutex_unlock(&table);
    close(fd);
    fail(EDVR, EMFILE);
    return -1;
}

int ibonl(int ud, int online) {
    struct dev *d = lookup(ud);
    if (!d) return fail(EDVR, EBADF);
    if (online) return set(CMPL, 0, 0);
    pthread_mutex_lock(&table);
    pthread_mutex_lock(&d->lock);
    close(d->fd);
    d->used = 0;
    pthread_mutex_unlock(&d->lock);
    pthread_mutex_destroy(&d->lock);
    pthread_mutex_unlock(&table);
    return set(CMPL, 0, 0);
}

int ibtmo(int ud, int v) {
    struct dev *d = lookup(ud);
    if (!d) return fail(EDVR, EBADF);
    if (v < 0 || v > 17) return fail(EARG, 0);
    d->tmo = v;
    return set(CMPL, 0, 0);
}

int ibeot(int ud, int v) {
    struct dev *d = lookup(ud);
    if (!d) return fail(EDVR, EBADF);
    d->eot = v != 0;
    return set(CMPL, 0, 0);
}

int ibwrt(int ud, const void *buf, long cnt) {
    struct dev *d = lookup(ud);
    if (!d) return fail(EDVR, EBADF);
    if (cnt < 0 || cnt > 0x7fffffff) return fail(EARG, 0);
    int32_t err; uint32_t flags, len;
    pthread_mutex_lock(&d->lock);
    int bad = request(d, 'W', d->eot, buf, (uint32_t)cnt, NULL, 0, &err, &flags, &len);
    pthread_mutex_unlock(&d->lock);
    if (bad) return fail(EDVR, EPIPE);
    if (err >= 0) return set(ERR | (err == EABO ? TIMO : 0), err, 0);
    return set(CMPL | (d->eot ? END : 0), 0, cnt);
}

int ibrd(int ud, void *buf, long cnt) {
    struct dev *d = lookup(ud);
    if (!d) return fail(EDVR, EBADF);
    if (cnt < 0) return fail(EARG, 0);
    uint32_t want = cnt > 0x7fffffff ? 0x7fffffff : (uint32_t)cnt;
    int32_t err; uint32_t flags, len;
    pthread_mutex_lock(&d->lock);
    int bad = request(d, 'R', 0, &want, 4, buf, want, &err, &flags, &len);
    pthread_mutex_unlock(&d->lock);
    if (bad) return fail(EDVR, EPIPE);
    if (err >= 0) return set(ERR | (err == EABO ? TIMO : 0), err, len);
    return set(CMPL | ((flags & 1) ? END : 0), 0, len);
}

int ibrsp(int ud, char *spr) {
    unsigned char stb = 0;
    int sta = simple(ud, 'S', &stb, 1);
    if (!(sta & ERR)) *spr = (char)stb;
    return sta;
}

int ibclr(int ud) { return simple(ud, 'C', NULL, 0); }
int ibtrg(int ud) { return simple(ud, 'T', NULL, 0); }
int ibloc(int ud) { return simple(ud, 'L', NULL, 0); }
int ibsic(int ud) { return simple(ud, 'I', NULL, 0); }
int ibsre(int ud, int v) { return simple(ud, v ? 'E' : 'e', NULL, 0); }

int ibwait(int ud, int mask) {
    if (!(mask & RQS)) {
        struct dev *d = lookup(ud);
        return d ? set(CMPL, 0, 0) : fail(EDVR, EBADF);
    }
    return simple(ud, 'Q', NULL, 0);
}
