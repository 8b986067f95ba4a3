"""Open a `snakemake --report` HTML file in headless Chromium, check that it renders, and save screenshots.

    python workflow/scripts/screenshot_report.py results/default/report.html docs/report_default.png

The report is a JavaScript single-page app: a plain screenshot shows only its front page. For each view below, a
temporary copy of the report gets one extra <script> that, once the app has rendered, does what a reader's clicks do
(app.showCategory, then app.setView on one result, the calls of the report's own menu and result buttons), and Chromium
renders that copy (--virtual-time-budget lets the app and its images finish). The rendered DOM of each view must name
the result it shows, else this exits 1. The views are stacked into one PNG. The report file itself is never changed.
Needs `chromium` (Debian: apt-get install chromium) and Pillow.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# (title, category, subcategory or None, result path suffix or None, text the rendered page must show: the result's
# label in the category's list, from the report() labels in workflow/rules/*.smk)
VIEWS = [
    ("front page: the workflow and the menu", None, None, None, "Workflow"),
    ("1 Tables: the main table", "1 Tables", None, "tables/main.html", "efficiency"),
    ("1 Tables: the efficiency table", "1 Tables", None, "tables/efficiency.html", "main"),
    ("2 Figures: FID against cost", "2 Figures", None, "plots/fid_vs_cost.png", "FID against cost"),
    ("3 Samples: every method's grid", "3 Samples", "all methods", "plots/samples.png", "every method, first seed"),
    ("4 PDM diagnostics: PCA of f_phi", "4 PDM diagnostics", "pdm", "diagnostics/pdm/seed0/pca.png",
     "PCA of f_phi features"),
]
NAVIGATE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const view = %s;
  // one click per tick, as a reader's: setView merges into the state of the previous render
  if (view.category) setTimeout(() => app.showCategory(view.category), 0);
  if (view.subcategory) setTimeout(() => app.setView({navbarMode: "subcategory", subcategory: view.subcategory}), 200);
  const path = view.result && Object.keys(results).find(p => p.endsWith(view.result));
  if (path) setTimeout(() => app.setView({content: results[path].mime_type === "text/html" ? "html" : "img",
                                          contentPath: results[path].data_uri, resultPath: path}), 400);
  setTimeout(() => {  // what the reader sees: the app's text and the shown result's element, for the check
    const root = document.getElementById("app");
    const shown = root.querySelector('img[src^="data:"], iframe[src^="data:"]');
    document.title = "RENDERED " + JSON.stringify({text: root.innerText, shown: shown ? shown.tagName : null});
  }, 1000);
}, 500));
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    sys.exit("screenshot_report: no Chromium found; install it (Debian: apt-get install chromium) and rerun")


def render(browser: str, page: Path, png: Path, size: str) -> str:
    """Screenshot `page` into `png`; returns the rendered DOM."""
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={size}",
              "--virtual-time-budget=10000"]
    subprocess.run(common + [f"--screenshot={png}", page.as_uri()], check=True, capture_output=True, timeout=180)
    return subprocess.run(common + ["--dump-dom", page.as_uri()], check=True, capture_output=True, text=True,
                          timeout=180).stdout


def check(dom: str, label: str, result: str | None) -> str | None:
    """None when the rendered app shows the menu (and the result: its name listed, its image or table element
    present); else what is missing."""
    import html as html_lib

    title = html_lib.unescape(dom.partition("<title>")[2].partition("</title>")[0])
    if not title.startswith("RENDERED "):
        return "the report's app did not render (no marker from the page's script)"
    state = json.loads(title.removeprefix("RENDERED "))
    if label not in state["text"]:
        return f"the rendered page does not show '{label}'"
    if result and state["shown"] not in ("IMG", "IFRAME"):
        return f"{result} is listed but not displayed"
    return None


def main(report: str, out: str, size: str = "1600,900") -> int:
    from PIL import Image, ImageDraw, ImageFont

    report_path, browser = Path(report).resolve(), chromium()
    html = report_path.read_text(encoding="utf-8")
    shots, failures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (title, category, subcategory, result, label) in enumerate(VIEWS):
            view = {"category": category, "subcategory": subcategory, "result": result}
            page = Path(tmp) / f"view{i}.html"
            head, body_end, tail = html.rpartition("</body>")  # the page's own end (inlined libraries quote "</body>")
            page.write_text(head + NAVIGATE % json.dumps(view) + body_end + tail, encoding="utf-8")
            dom = render(browser, page, Path(tmp) / f"view{i}.png", size)
            problem = check(dom, label, result)
            if problem:
                failures.append(f"{title}: {problem}")
            shots.append((title, Image.open(Path(tmp) / f"view{i}.png").convert("RGB")))
    width = max(image.width for _, image in shots)
    band = 32  # a caption band above each view
    sheet = Image.new("RGB", (width, sum(image.height + band for _, image in shots)), "white")
    y = 0
    for title, image in shots:
        ImageDraw.Draw(sheet).text((8, y + 4), title, fill="black", font=ImageFont.load_default(size=20))
        sheet.paste(image, (0, y + band))
        y += image.height + band
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    print(f"screenshot_report: {len(shots)} views of {report_path} -> {out}")
    for failure in failures:
        print(f"screenshot_report: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
