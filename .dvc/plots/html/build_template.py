"""Write .dvc/plots/html/template.html: DVC's plots page with Vega, Vega-Lite and vega-embed inlined.

DVC's own page loads them from a CDN, so offline it stays blank. Rerun this after replacing a file
in vendor/ (see README.md there): `python .dvc/plots/html/build_template.py`.
"""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "template.html"
# Load order matters: vega-lite needs the `vega` global, vega-embed needs both.
VENDORED_SCRIPTS = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")
SCRIPTS_MARKER = "<!-- vendored scripts -->"

# DVC fills `{plot_divs}` (required) and `{refresh_tag}`. There is deliberately no scripts
# placeholder: DVC would put its CDN <script> tags there.
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Vega, Vega-Lite and vega-embed, inlined from .dvc/plots/html/vendor so that the page draws offline -->
    <!-- vendored scripts -->
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def inline_script(source: str) -> str:
    """A <script> element holding `source`; the bundle's source map is not vendored, so its link goes."""
    source = re.sub(r"\n?//# sourceMappingURL=\S+\s*$", "", source)
    if "</script" in source.lower() or re.search(r"\{(plot_divs|refresh_tag|scripts)\}", source):
        raise ValueError("a vendored script contains text that would end the <script> or that DVC replaces")
    return f"<script>{source}</script>"


def build_template() -> str:
    scripts = "\n".join(inline_script((HERE / "vendor" / name).read_text(encoding="utf-8"))
                        for name in VENDORED_SCRIPTS)
    return PAGE.replace(SCRIPTS_MARKER, scripts)


if __name__ == "__main__":
    TEMPLATE.write_text(build_template(), encoding="utf-8")
    print(f"wrote {TEMPLATE}")
