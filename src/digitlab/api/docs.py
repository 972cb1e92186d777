"""`/docs` (Swagger UI) and `/redoc` without internet: their JavaScript and CSS are served by this API
from the files the `fastapi-offline` package ships, instead of FastAPI's default CDN links (most
deployments of digitlab, and the machines it is developed on, have no route to a CDN)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: where the asset files are mounted
ASSETS_URL = "/docs-assets"


def assets_dir() -> str:
    """The folder of Swagger UI 5 (`swagger-ui-bundle.js`, `swagger-ui.css`) and ReDoc
    (`redoc.standalone.js`) in the installed `fastapi-offline` package."""
    return str(files("fastapi_offline") / "static")


class WholeFiles(StaticFiles):
    """The asset files whole, whatever `Range` asks (RFC 9110 lets a server ignore it): a malformed or unsatisfiable
    range got a plain-text 400 or an empty 416, where every other error of this API is JSON (a probe, session 27);
    the files are a few hundred KB, fetched whole by the docs pages."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope.get("headers", ()) if k not in (b"range", b"if-range")]
            scope = {**scope, "headers": headers}
        await super().__call__(scope, receive, send)


def install_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Add the two documentation pages and their assets to an app built with docs_url=redoc_url=None."""
    app.mount(ASSETS_URL, WholeFiles(directory=assets_dir()), name="docs-assets")
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")  # behind a proxy that mounts the API under a prefix
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API docs",
            oauth2_redirect_url=oauth2_redirect_url,
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        )

    if oauth2_redirect_url:

        @app.get(oauth2_redirect_url, include_in_schema=False)
        async def swagger_ui_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
