"""Write .dvc/plots/offline.html: DVC's plot page with Vega, Vega-Lite and Vega-Embed inlined, so
`dvc plots show` renders with no network. Usage (needs npm and the npm registry once):

    cd "$(mktemp -d)" && npm pack vega@5 vega-lite@5 vega-embed@6 && for f in *.tgz; do tar -xzf "$f" --one-top-level; done
    python tools/build_plots_template.py THAT_FOLDER
"""

from __future__ import annotations

import sys
from pathlib import Path

BUNDLES = (("vega", "vega.min.js"), ("vega-lite", "vega-lite.min.js"), ("vega-embed", "vega-embed.min.js"))
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
{{refresh_tag}}
<title>imgpipe — DVC plots</title>
<!-- Vega {versions}: BSD-3-Clause, (c) the University of Washington Interactive Data Lab; inlined so the page opens offline. -->
{scripts}
<style>
  body {{ font-family: system-ui, sans-serif; margin: 16px; }}
  table {{ border-spacing: 15px; }}
</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def build(folder: Path) -> str:
    """The page, from the unpacked npm tarballs in ``folder`` (``<name>-<version>/package/build/``)."""
    scripts, versions = [], []
    for name, bundle in BUNDLES:
        (unpacked,) = sorted(path for path in folder.glob(f"{name}-[0-9]*") if path.is_dir())
        code = (unpacked / "package" / "build" / bundle).read_text(encoding="utf-8")
        if "{plot_divs}" in code or "{scripts}" in code or "{refresh_tag}" in code:
            raise ValueError(f"{bundle} contains one of DVC's placeholders; it cannot be inlined as it is")
        escaped = code.replace("</script", "<\\/script")
        scripts.append(f"<script>{escaped}</script>")
        versions.append(unpacked.name)
    return PAGE.format(versions=", ".join(versions), scripts="\n".join(scripts))


if __name__ == "__main__":
    target = Path(__file__).resolve().parents[1] / ".dvc" / "plots" / "offline.html"
    target.write_text(build(Path(sys.argv[1])), encoding="utf-8")
    print(f"wrote {target} ({target.stat().st_size:,} bytes)")
