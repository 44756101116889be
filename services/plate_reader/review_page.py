"""`GET /review`: the page people correct readings on (review_page.html, which calls the review
API under /v1/reviews). Mounted on the plate reader beside its /v1 app."""

from __future__ import annotations

import functools
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

PAGE = Path(__file__).with_name("review_page.html")
page_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@functools.cache  # the file ships with the code: read it once, not per request
def _page_html() -> str:
    return PAGE.read_text()


@page_app.get("/", response_class=HTMLResponse)
def review_page() -> str:
    return _page_html()
