"""The web pages: the admin pages (their own listener, `admin_app.py`) and each user's account
page (`/account/` on the sync listener, `account.py`).

Server-rendered HTML (Jinja2, autoescaped) and one stylesheet; no scripts. `area.py` runs a
request of either area: sessions and CSRF (`sessions.py`), forms (`forms.py`), the pages' own
HTML error mapping (`errors.py`), rendering with the security headers (`render.py`). Changes
go through the admin operations (`admin/operations.py`), never SQL or state of their own.
"""
