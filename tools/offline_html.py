"""Sphinx extension: keep the built book self-contained (loaded via ``_config.yml``'s
``sphinx.local_extensions``).

Jupyter Book 1.x always loads ``sphinx_thebe``, which puts on every page a script declaring
``THEBE_JS_URL`` (a CDN address, fetched if thebe is ever started) and ``sphinx-thebe.js``. The book
has thebe switched off (``launch_buttons.thebe: false``; Colab and Binder links open a live kernel
instead), and the declaration is emitted twice, which is a JavaScript error on every page. This
extension drops those scripts from every page, so no page refers to code outside the site.

It also drops the ipywidgets state that myst-nb embeds in pages whose notebook displayed a widget:
the book shows widgets as static images (``kdlib.widgets``), and no widget manager (which would
come from a CDN) is loaded to read that state.
"""

from __future__ import annotations

THEBE_SCRIPT = "sphinx-thebe.js"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def _is_thebe(script) -> bool:
    filename = getattr(script, "filename", script) or ""
    body = (getattr(script, "attributes", None) or {}).get("body", "") or ""
    return str(filename).endswith(THEBE_SCRIPT) or "THEBE_JS_URL" in body


def _is_widget_state(script) -> bool:
    return (getattr(script, "attributes", None) or {}).get("type") == WIDGET_STATE


def _drop_unused_scripts(app, pagename, templatename, context, doctree) -> None:
    thebe_wanted = app.config.html_theme_options.get("launch_buttons", {}).get("thebe")
    widgets_wanted = bool(app.config.nb_ipywidgets_js)
    if "script_files" in context:
        context["script_files"] = [
            s
            for s in context["script_files"]
            if not (_is_thebe(s) and not thebe_wanted)
            and not (_is_widget_state(s) and not widgets_wanted)
        ]


def setup(app):
    app.connect("html-page-context", _drop_unused_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
