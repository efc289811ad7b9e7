"""A live instrument dashboard: aiotmc embedded in an ASGI (Starlette) web service.

Run it with ``python -m examples.web_dashboard`` (or ``python examples/web_dashboard``)
and open http://127.0.0.1:8000/. See ``docs/web.md``.
"""
