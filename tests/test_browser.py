"""The lab's pages, opened offline in headless Chromium: every figure and plot is drawn, nothing
errs, nothing is fetched. The lab report, the study report, and the `dvc plots show` and
`dvc plots diff` pages of a tiny built repo copy (whose plots page inlines Vega from
.dvc/plots/html/: DVC's own page loads it from a CDN and stays blank offline), and the docs site
(whose search runs from file:// with the vendored iframe-worker shim: the offline plugin's default
loads it from a CDN)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import runpy
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from dvc_render.vega import VegaRenderer
from PIL import Image

from tests.conftest import REPO_ROOT, repo_env, run
from tests.test_docs import build_docs, copy_docs
from tests.headless_chromium import CHROMIUM, INSTALL_HINT, PAGE_WIDTH, RenderedPage, render
from tests.test_study import PARAMS, curve, experiment, task_run
from stages.reporting.study import build_study_report

OFFLINE_PLOTS = REPO_ROOT / ".dvc" / "plots" / "html"
MIN_FIGURE_WIDTH = 500  # CSS px: a third of a 1400 px screen and more (the figures were ~350 px)
# A plot div as dvc-render writes it: its id, then its Vega-Lite spec as one line of JSON.
PLOT_DIV = re.compile(r'<div id = "([^"]+)">\s*<script type = "text/javascript">\s*var spec = (\{.*\});$', re.M)


@pytest.fixture(scope="session")  # session-wide so that it is checked before the repo is built
def chromium() -> Path:
    """Headless Chromium, or a skip that says how to install it (a failure in CI: CI=true)."""
    if not os.access(CHROMIUM, os.X_OK):
        reason = f"these tests open the pages in headless Chromium, and {CHROMIUM} is missing: {INSTALL_HINT}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


def open_in_browser(html: Path, name: str, plot_ids: list[str], tmp_path: Path, script: str | None = None) -> RenderedPage:
    """Render `html` and keep its screenshot as <name>.png (in DNNLAB_SCREENSHOTS if set, to look at)."""
    page = render(html, plot_ids, script)
    folder = Path(os.environ.get("DNNLAB_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.png").write_bytes(page.screenshot)
    return page


def is_one_colour(png: bytes) -> bool:
    extrema = Image.open(io.BytesIO(png)).convert("RGB").getextrema()
    return all(low == high for low, high in extrema)


def assert_offline_and_clean(page: RenderedPage) -> None:
    assert page.errors == [], "the page logged errors:\n" + "\n".join(page.errors)
    assert page.remote_requests == [], f"the page asked the network for {page.remote_requests}"
    blank = is_one_colour(page.screenshot)
    assert not blank, "the page's screenshot is a single colour"


def assert_images_drawn(page: RenderedPage, expected: int) -> None:
    assert len(page.images) == expected > 0
    for number, image in enumerate(page.images, 1):
        # A real figure differs from its corner pixel in well over 1 % of its area.
        assert image["drawn"] > 0.01 * image["width"] * image["height"] > 0, f"image {number} is blank: {image}"


def assert_plots_drawn(page: RenderedPage, plot_ids: list[str]) -> None:
    for plot_id in plot_ids:
        views = page.plots[plot_id]
        assert views, f"plot {plot_id} drew no <canvas>/<svg> (errors: {page.errors})"
        # Axes, grid and text are grey: coloured pixels are the data marks (lines, cells).
        assert all(view["coloured"] > 100 for view in views), f"plot {plot_id} has no data marks: {views}"


def plot_specs(html: Path) -> dict[str, dict]:
    return {plot_id: json.loads(spec) for plot_id, spec in PLOT_DIV.findall(html.read_text(encoding="utf-8"))}


def defined_plots(repo: Path) -> int:
    """The plots `dvc plots show` draws: dvc.yaml's `plots:` section, and each file of every stage's `plots:`
    output (declared there for the run cache; DVC draws each file in its default template)."""
    dvc_yaml = yaml.safe_load((repo / "dvc.yaml").read_text())
    tasks = next(entry["tasks"] for entry in dvc_yaml["vars"] if "tasks" in entry)
    paths = [next(iter(entry)) if isinstance(entry, dict) else entry
             for stage in dvc_yaml["stages"].values() for entry in stage.get("plots", [])]
    files = [repo / path.replace("${item.task}", task) for path in paths for task in tasks]
    return len(dvc_yaml["plots"]) + sum(len([f for f in path.rglob("*") if f.is_file()]) if path.is_dir() else 1
                                        for path in files)


def band_plots(repo: Path) -> dict[str, str]:
    """dvc.yaml's learning-curve plots, each a mean with its 95 % band over the seeds: div id -> the metric
    whose curves it keeps (its template's name: learning_curve_band_<metric>[_log])."""
    definitions = {title: props for entry in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]
                   for title, props in entry.items()}
    curves = {title: props["template"] for title, props in definitions.items() if title.startswith("Learning curves")}
    assert curves and all(template.startswith("learning_curve_band_") for template in curves.values()), curves
    return {VegaRenderer.remove_special_chars(title): template.removeprefix("learning_curve_band_").removesuffix("_log")
            for title, template in curves.items()}


# Draws each spec of SPECS (id -> spec) in a headless Vega view of its own: the page's views are vega-embed's,
# out of reach, but the libraries are the page's. Returns each one's area and line items: which revision, curve
# and epoch each is, whether it is drawn (an item with a null low or high is not), its height in px, its line's
# dash, and which path (one line or band, a mark of its own) it is part of.
BAND_MARKS = """
(async () => {
  const result = {};
  for (const [id, spec] of Object.entries(SPECS)) {
    const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), {renderer: 'none'});
    await view.runAsync();
    const marks = {area: [], line: []};
    let paths = 0;
    (function walk(node) {
      const path = paths++;
      for (const item of node.items || []) {
        if (node.marktype in marks) {
          const y2 = node.marktype === 'area' ? item.y2 : item.y;
          marks[node.marktype].push({rev: item.datum.rev, curve: item.datum.curve, epoch: +item.datum.epoch,
                                     drawn: item.defined !== false && Number.isFinite(item.y) && Number.isFinite(y2),
                                     height: Math.abs(y2 - item.y), dash: JSON.stringify(item.strokeDash ?? null), path});
        }
        walk(item);
      }
    })(view.scenegraph().root);
    view.finalize();
    result[id] = marks;
  }
  return result;
})()
"""


def band_marks(specs: dict[str, dict], bands: dict[str, str]) -> str:
    return BAND_MARKS.replace("SPECS", json.dumps({plot_id: specs[plot_id] for plot_id in bands}))


def assert_bands_drawn(page: RenderedPage, specs: dict[str, dict], bands: dict[str, str]) -> None:
    """Each band plot draws its metric's train and val curves, a line per revision and curve (the revisions
    dashed apart), and a band item for every epoch whose row has a 95 % interval (low, high): none where
    they are empty."""
    for plot_id, metric in bands.items():
        rows = [row for row in specs[plot_id]["data"]["values"] if row["curve"].endswith("/" + metric)]
        assert {row["curve"] for row in rows} == {f"train/{metric}", f"val/{metric}"}, plot_id
        with_interval = {(row["rev"], row["curve"], int(row["epoch"])) for row in rows if row["low"] and row["high"]}
        assert with_interval, f"{plot_id}: no row of its data has a 95 % interval"
        marks = page.script_result[plot_id]
        lines = {(item["rev"], item["curve"]) for item in marks["line"]}
        assert lines == {(row["rev"], row["curve"]) for row in rows}, f"{plot_id}: its lines: {lines}"
        band = [item for item in marks["area"] if item["drawn"]]
        drawn = {(item["rev"], item["curve"], item["epoch"]) for item in band}
        assert drawn == with_interval, f"{plot_id}: band items unlike its rows: {sorted(drawn ^ with_interval)}"
        assert any(item["height"] > 0 for item in band), f"{plot_id}: its band, {len(band)} items, has no height"
        for kind, items in marks.items():
            paths: dict[int, set] = {}
            for item in items:
                paths.setdefault(item["path"], set()).add((item["rev"], item["curve"]))
            assert all(len(series) == 1 for series in paths.values()), f"{plot_id}: one {kind} path joins {paths}"
        dashes = {(item["rev"], item["dash"]) for item in marks["line"]}
        assert len(dashes) == len({rev for rev, _ in dashes}) == len({dash for _, dash in dashes}), \
            f"{plot_id}: its revisions are not told apart by their dash: {dashes}"


def as_if_one_seed_ran_the_last_epoch(band: Path) -> None:
    """Another run's learning_curve_band.csv: the means moved, and the last epoch run by one seed (as train
    writes it when the others stopped early: no interval, low and high empty)."""
    with band.open(newline="") as file:
        rows = list(csv.DictReader(file))
    last = max(int(row["epoch"]) for row in rows)
    for row in rows:
        row["mean"] = f"{0.9 * float(row['mean']):g}"
        if int(row["epoch"]) == last:
            row.update(low="", high="", seeds="1")
    band.unlink()  # a DVC output: never write through a link into the cache
    with band.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def dvc_plots(repo: Path, mirror: Path, out: Path, *args: str) -> Path:
    run(["dvc", "plots", *args, "--out", str(out)], repo, repo_env(mirror))
    return out / "index.html"


# --- the offline template ---

def test_offline_template_is_built_from_the_vendored_scripts():
    build_template = runpy.run_path(str(OFFLINE_PLOTS / "build_template.py"))["build_template"]
    assert (OFFLINE_PLOTS / "template.html").read_text(encoding="utf-8") == build_template(), \
        ".dvc/plots/html/template.html is stale: run `python .dvc/plots/html/build_template.py`"


# --- the pages in a browser ---

def test_lab_report_draws_every_figure(chromium, built_repo, tmp_path):
    html = built_repo / "reports" / "report.html"
    page = open_in_browser(html, "report", [], tmp_path)
    assert_offline_and_clean(page)
    assert_images_drawn(page, html.read_text(encoding="utf-8").count("data:image/png;base64,"))
    assert_readable(page)


def assert_readable(page: RenderedPage) -> None:
    """At a laptop's 1400 px: every figure at least MIN_FIGURE_WIDTH wide on the page and not shrunk
    (its labels as large as drawn), and no markdown shown as such."""
    assert PAGE_WIDTH == 1400
    for number, image in enumerate(page.images, 1):
        assert image["shown"] >= MIN_FIGURE_WIDTH, f"figure {number} is {image['shown']:.0f} px wide: {image}"
        assert image["shown"] >= 0.95 * image["width"], f"figure {number} is shrunk on the page: {image}"
    assert "`" not in page.text, [line for line in page.text.splitlines() if "`" in line]


def test_study_report_draws_every_figure_and_each_changed_tasks_section(chromium, tmp_path):
    heart = {"test/roc_auc": 0.89, "test/accuracy": 0.8, "val/loss": 0.4}
    wider = PARAMS.task("heart").model_copy(update={"model": PARAMS.task("heart").model.model_copy(update={"width": 128})})
    experiments = [experiment("baseline", heart=task_run("heart", heart)),
                   experiment("batch-120", {"synthetic.train.batch_size": 120}, train={"batch_size": 120},
                              loss_curve=curve(2000, 300, 0.005), heart=task_run("heart", heart)),
                   experiment("heart-width-128", {"heart.model.width": 128},
                              heart=task_run("heart", {**heart, "test/roc_auc": 0.91}, config=wider))]
    html = tmp_path / "reports" / "study.html"
    html.parent.mkdir()
    html.write_text(build_study_report(experiments, "0123456789abcdef"), encoding="utf-8")
    page = open_in_browser(html, "study", [], tmp_path)
    assert_offline_and_clean(page)
    assert_images_drawn(page, 2)
    # Heart's own answer and table, as a reader sees them: judged seed by seed, mean ± margin.
    assert "Heart disease: does each change help, hurt, or can we not tell?" in page.text
    assert re.search(r"heart-width-128 \(model\.width 64 → 128\): test/roc_auc 0\.8900 → 0\.9100 \(helps: \+0\.02 \[",
                     page.text), page.text[:3000]
    assert "Final metrics, Heart disease" in page.text and re.search(r"0\.9100 ± 0\.0\d+", page.text)


def test_dvc_plots_show_draws_every_plot_offline_with_the_vendored_vega(chromium, workspace, mirror, tmp_path):
    html = dvc_plots(workspace, mirror, tmp_path / "show", "show")
    specs = plot_specs(html)
    plot_ids = list(specs)
    assert len(plot_ids) == defined_plots(workspace)
    bands = band_plots(workspace)
    page = open_in_browser(html, "dvc-plots-show", plot_ids, tmp_path, band_marks(specs, bands))
    assert_offline_and_clean(page)
    assert_bands_drawn(page, specs, bands)
    # The lab's plots (dvc.yaml's `plots:`) are drawn with data. The stage plot files DVC also draws in its
    # default template (ids from their paths) are left out: predictions.csv's draws no marks there (known).
    curated = [plot_id for plot_id in plot_ids if not plot_id.startswith("reports_")]
    assert len(curated) == len(yaml.safe_load((workspace / "dvc.yaml").read_text())["plots"])
    assert_plots_drawn(page, curated)
    # Same majors as the CDN URLs of DVC's own page (its templates are written for them), and the
    # versions .dvc/plots/html/README.md names.
    cdn = dict(re.findall(r"npm/(vega|vega-lite|vega-embed)@(\d+)\.", VegaRenderer.SCRIPTS))
    loaded = {"vega": page.versions.get("vega"), "vega-lite": page.versions.get("vegaLite"),
              "vega-embed": page.versions.get("vegaEmbed")}
    assert {name: str(version).split(".")[0] for name, version in loaded.items()} == cdn, loaded
    readme = (OFFLINE_PLOTS / "README.md").read_text()
    assert all(f"{name} {version}" in readme for name, version in loaded.items()), loaded


def test_dvc_plots_diff_draws_both_revisions_in_every_plot_offline(chromium, workspace, mirror, tmp_path):
    # HEAD~1: the plot CSVs committed in this checkout; HEAD: the tiny-epoch rebuild.
    html = dvc_plots(workspace, mirror, tmp_path / "diff", "diff", "HEAD~1", "HEAD")
    specs = plot_specs(html)
    assert len(specs) == defined_plots(workspace)
    bands = band_plots(workspace)
    for plot_id, spec in specs.items():
        # The bands' CSV is DVC-cached, and HEAD~1 has no dvc.lock (the copy before `dvc repro`): HEAD only.
        expected = {"HEAD"} if plot_id in bands else {"HEAD~1", "HEAD"}
        assert {row["rev"] for row in spec["data"]["values"]} == expected, plot_id
    page = open_in_browser(html, "dvc-plots-diff", list(specs), tmp_path, band_marks(specs, bands))
    assert_offline_and_clean(page)
    assert_plots_drawn(page, list(specs))
    assert_bands_drawn(page, specs, bands)


def test_dvc_plots_diff_draws_the_band_of_each_revision(chromium, workspace, mirror, tmp_path):
    # HEAD against a workspace whose curves moved, with a last epoch that one seed ran (a gap in its band).
    for band in workspace.glob("reports/plots/*/learning_curve_band.csv"):
        as_if_one_seed_ran_the_last_epoch(band)
    html = dvc_plots(workspace, mirror, tmp_path / "diff-bands", "diff", "HEAD")
    specs, bands = plot_specs(html), band_plots(workspace)
    for plot_id in bands:
        assert {row["rev"] for row in specs[plot_id]["data"]["values"]} == {"HEAD", "workspace"}, plot_id
    page = open_in_browser(html, "dvc-plots-diff-bands", list(bands), tmp_path, band_marks(specs, bands))
    assert_offline_and_clean(page)
    assert_plots_drawn(page, list(bands))
    assert_bands_drawn(page, specs, bands)


def test_without_the_offline_template_the_plots_page_is_blank_offline(chromium, workspace, mirror, tmp_path):
    """Shows that the checks above see DVC's default page fail offline (it loads Vega from a CDN)."""
    run(["dvc", "config", "--unset", "plots.html_template"], workspace, repo_env(mirror))
    html = dvc_plots(workspace, mirror, tmp_path / "cdn", "show")
    page = open_in_browser(html, "dvc-plots-show-without-template", list(plot_specs(html)), tmp_path)
    assert page.remote_requests and all("cdn.jsdelivr.net" in url for url in page.remote_requests)
    assert any("vegaEmbed is not defined" in error for error in page.errors)
    assert all(views == [] for views in page.plots.values())
    assert is_one_colour(page.screenshot)


# --- the docs site ---

# Opens Material's search (over file:// its worker starts only then), types a query and waits for the
# results (the index loads in the worker, an iframe over file://, asynchronously); returns their links.
SEARCH = """
(async () => {
  const input = document.querySelector('[data-md-component="search-query"]');
  input.value = QUERY;
  const toggle = document.getElementById('__search');
  toggle.checked = true;
  toggle.dispatchEvent(new Event('change'));
  input.focus();
  input.dispatchEvent(new KeyboardEvent('keyup'));
  for (let tries = 0; tries < 100; tries++) {
    const links = [...document.querySelectorAll('.md-search-result__item a')].map(a => a.getAttribute('href'));
    if (links.length) return links;
    await new Promise(resolve => setTimeout(resolve, 100));
  }
  return [];
})()
"""
# A word only the study page uses ("Detect zombie flows"): a hit there is the index's, not the open page's.
QUERY, FOUND_ON = "zombie", "study.html"


def nav_titles(config: Path) -> list[str]:
    return [next(iter(entry)) for entry in yaml.safe_load(config.read_text())["nav"]]


def test_docs_site_opens_offline_with_its_nav_and_a_working_search(chromium, tmp_path):
    config = REPO_ROOT / "mkdocs.yml"
    built = build_docs(config, tmp_path / "site")
    assert built.returncode == 0, built.stderr
    page = open_in_browser(tmp_path / "site" / "index.html", "docs-site", [], tmp_path,
                           SEARCH.replace("QUERY", json.dumps(QUERY)))
    assert_offline_and_clean(page)
    missing = [title for title in nav_titles(config) if title not in page.text]
    assert not missing, f"the page does not show the nav entries {missing}"
    assert "make pipeline" in page.text and "make test" in page.text
    assert any(urlparse(link).path.endswith("/" + FOUND_ON) for link in page.script_result), \
        f"searching {QUERY!r} offline found {page.script_result}, nothing on {FOUND_ON}"


def test_without_the_vendored_shim_the_docs_search_reaches_for_a_cdn(chromium, tmp_path):
    """Shows that the checks above see the offline plugin's default fail offline (unpkg.com)."""
    config = copy_docs(tmp_path)
    settings = yaml.safe_load(config.read_text())
    del settings["extra"]["polyfills"]
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    built = build_docs(config, tmp_path / "site")
    assert built.returncode == 0, built.stderr
    page = open_in_browser(tmp_path / "site" / "index.html", "docs-site-without-shim", [], tmp_path,
                           SEARCH.replace("QUERY", json.dumps(QUERY)))
    assert page.remote_requests and all("unpkg.com" in url for url in page.remote_requests)
    assert page.script_result == []
