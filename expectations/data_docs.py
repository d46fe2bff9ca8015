"""Great Expectations Data Docs that render with no network: GX's pages load Bootstrap, jQuery and
bootstrap-table from CDNs (the validation list is drawn by bootstrap-table, so offline the index is blank).
`make_offline` copies the vendored files (data_docs_vendor/, versions and licenses in its README) into the
docs' static/ folder and points every page at them; remote assets the pages do not need (Vega, icons, the
dark theme, the remote logo) are dropped or replaced by GX's own local copy."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

VENDOR_DIR = Path(__file__).with_name("data_docs_vendor")
# file name at the CDN -> vendored file
VENDORED = {
    "jquery-3.7.1.min.js": "jquery.min.js",
    "popper.min.js": "popper.min.js",
    "bootstrap.min.js": "bootstrap.min.js",
    "bootstrap.min.css": "bootstrap.min.css",
    "bootstrap-table.min.js": "bootstrap-table.min.js",
    "bootstrap-table.min.css": "bootstrap-table.min.css",
    "bootstrap-table-filter-control.min.js": "bootstrap-table-filter-control.min.js",
    "bootstrap-table-filter-control.min.css": "bootstrap-table-filter-control.min.css",
    "bootstrap-datepicker.min.js": "bootstrap-datepicker.min.js",
    "bootstrap-datepicker.min.css": "bootstrap-datepicker.min.css",
}
_SCRIPT = re.compile(r'<script[^>]*\bsrc="(https?://[^"]+)"[^>]*>\s*</script>', re.S)
_LINK = re.compile(r'<link[^>]*\bhref="(https?://[^"]+)"[^>]*>', re.S)
_IMAGE = re.compile(r'(<img[^>]*\bsrc=")(https?://[^"]+)(")', re.S)


def _local(url: str) -> str | None:
    return VENDORED.get(url.split("?")[0].rstrip("/").rsplit("/", 1)[-1])


def make_offline(docs_dir: Path) -> int:
    """Rewrite every page under docs_dir to load local assets only; returns how many pages were rewritten."""
    docs_dir = Path(docs_dir)
    vendor = docs_dir / "static" / "vendor"
    shutil.copytree(VENDOR_DIR, vendor, dirs_exist_ok=True)
    logo = docs_dir / "static" / "images" / "logo-long.png"
    pages = 0
    for page in docs_dir.rglob("*.html"):
        to_vendor = os.path.relpath(vendor, page.parent)
        text = page.read_text()

        def script(match, to_vendor=to_vendor):
            local = _local(match.group(1))
            return f'<script src="{to_vendor}/{local}"></script>' if local else ""

        def link(match, to_vendor=to_vendor):
            local = _local(match.group(1))
            if not local:
                return "" if "stylesheet" in match.group(0) else match.group(0)
            return f'<link rel="stylesheet" href="{to_vendor}/{local}">'

        def image(match, page=page):
            if logo.exists():
                return match.group(1) + os.path.relpath(logo, page.parent) + match.group(3)
            return match.group(1) + match.group(3)

        rewritten = _IMAGE.sub(image, _LINK.sub(link, _SCRIPT.sub(script, text)))
        if rewritten != text:
            page.write_text(rewritten)
            pages += 1
    return pages
