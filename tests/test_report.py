"""The figures stages and the report stage on tiny hand-made inputs: one self-contained page, its
figures, captions and table, results over seeds (mean, band, interval), and one-line failures that
leave the previous outputs alone."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

import subprocess
import sys

from stages import figures as figures_stage
from stages import report
from stages.core.errors import StageError, run_stage
from stages.core.io import csv_bytes, parquet_bytes, write_outputs
from stages.core.results import TaskResults
from stages.reporting import figures, inputs, lab, page
from stages.reporting.fragment import read_fragment
from stages.spread import curve_band, mean_curve, metrics_over_seeds
from stages.tasks import TASK_NAMES, heart, heart_figures, mnist, mnist_figures, synthetic_figures
from tests.conftest import REPO_ROOT
from stages.tasks.synthetic import DOMAIN_SCHEMA

SECTION_TITLES = ("Synthetic data", "Learning curves", "Fitted curve vs truth", "Extrapolation",
                  "Heart disease classifier", "Sample digits", "MNIST confusion matrix", "Mispredicted digits",
                  "Metrics")
# 1 synthetic data + 3 learning curves + fit + extrapolation + ROC + heart confusion
# + sample digits + MNIST confusion + mispredicted gallery
EXPECTED_IMAGES = 11
MNIST_ACTUAL = [7, 1, 0, 4, 4, 9]
MNIST_PREDICTED = [7, 7, 0, 4, 9, 9]  # rows 1 and 4 are wrong

METRICS = {
    "synthetic": {"train/loss": 1.0, "val/loss": 1.1, "train/epochs_run": 3, "test/mse": 1.2,
                  "test/relative_mse": 0.012345678, "test/mse_vs_truth": 0.1,
                  "domain/mse_vs_truth": 0.2, "ood/mse_vs_truth": 42.424242},
    "heart": {"train/loss": 0.3, "val/loss": 0.4, "train/accuracy": 0.9, "val/accuracy": 0.8, "train/epochs_run": 3,
              "test/accuracy": 0.87654321, "test/precision": 0.75, "test/recall": 1.0, "test/f1": 0.857142,
              "test/roc_auc": 0.9, "test/rows": 6},
    "mnist": {"train/loss": 0.1, "val/loss": 0.2, "train/accuracy": 0.95, "val/accuracy": 0.9, "train/epochs_run": 3,
              "test/accuracy": 2 / 3, "test/macro_f1": 0.61, "test/accuracy_digit_4": 0.5},
}
# Seeds as train counts them from `seed`: synthetic ran one, the classifiers three, each metric (but the
# counts) shifted by -0.01, 0, +0.01 from METRICS, whose values stay the means.
SEEDS = {"synthetic": [42], "heart": [42, 43, 44], "mnist": [42, 43, 44]}
SEED_SHIFTS = (-0.01, 0.0, 0.01)


def metrics_document(name: str) -> dict:
    """evaluate@<task>'s metrics over the task's SEEDS, around METRICS."""
    shifts = SEED_SHIFTS if len(SEEDS[name]) > 1 else (0.0,)
    return metrics_over_seeds({seed: {key: value if isinstance(value, int) else value + shift
                                      for key, value in METRICS[name].items()}
                               for seed, shift in zip(SEEDS[name], shifts)})


def seed_curves(name: str) -> dict[int, pd.DataFrame]:
    """Each seed's learning curve, as train holds them: the seeds apart by 0.1 in loss, 0.02 in accuracy."""
    curves = {}
    for index, seed in enumerate(SEEDS[name]):
        shift = index - (len(SEEDS[name]) - 1) / 2
        curve = pd.DataFrame({"epoch": [1, 2, 3], "train/loss": [3.0, 2.0, 1.0], "val/loss": [3.5, 2.5, 1.1]})
        curve[["train/loss", "val/loss"]] += 0.1 * shift
        if name != "synthetic":
            curve = curve.assign(**{"train/accuracy": [0.5, 0.7, 0.9], "val/accuracy": [0.5, 0.6, 0.8]})
            curve[["train/accuracy", "val/accuracy"]] += 0.02 * shift
        curves[seed] = curve
    return curves


def make_inputs(root: Path) -> dict[str, Path]:
    """Every file the report reads, tiny, laid out as dvc.yaml lays them out."""
    metrics, plots, data = root / "metrics", root / "plots", root / "data"
    outputs: dict[Path, bytes] = {metrics / f"{name}.json": json.dumps(metrics_document(name)).encode()
                                  for name in METRICS}
    for name in TASK_NAMES:
        curves = seed_curves(name)
        outputs[plots / name / "learning_curve.csv"] = csv_bytes(mean_curve(curves))
        outputs[plots / name / "learning_curve_band.csv"] = csv_bytes(curve_band(curves))

    x_grid = np.linspace(-8, 8, 33)
    outputs[plots / "synthetic" / "evaluation" / "predictions.csv"] = csv_bytes(pd.DataFrame({
        "x": x_grid, "y_true": np.abs(x_grid) + 1, "y_pred": 0.8 * x_grid + 2,
        "region": np.where(np.abs(x_grid) <= 5, "domain", "extrapolation")}))
    outputs[plots / "heart" / "evaluation" / "roc.csv"] = csv_bytes(pd.DataFrame(
        {"fpr": [0.0, 0.0, 0.5, 1.0], "tpr": [0.0, 0.5, 1.0, 1.0], "threshold": [1.0, 0.9, 0.4, 0.1]}))
    outputs[plots / "heart" / "evaluation" / "confusion.csv"] = csv_bytes(pd.DataFrame(
        {"actual": [0, 0, 1, 1, 1, 0], "predicted": [0, 1, 1, 1, 1, 0]}))
    outputs[plots / "mnist" / "evaluation" / "confusion.csv"] = csv_bytes(pd.DataFrame(
        {"index": range(len(MNIST_ACTUAL)), "actual": MNIST_ACTUAL, "predicted": MNIST_PREDICTED}))
    outputs[plots / "mnist" / "evaluation" / "digit_accuracy.csv"] = csv_bytes(mnist.digit_accuracy(
        pd.DataFrame({"actual": MNIST_ACTUAL, "predicted": MNIST_PREDICTED})))

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 5)):
        x = rng.uniform(-5, 5, n)
        outputs[data / "synthetic" / f"{split}.parquet"] = parquet_bytes(
            pd.DataFrame({"x": x, "y": np.abs(x) + 1 + rng.normal(0, 1, n), "y_true": np.abs(x) + 1}), DOMAIN_SCHEMA)
    images = rng.integers(0, 256, size=(len(MNIST_ACTUAL), 28, 28), dtype=np.uint8)
    tables = mnist.preprocess({"x_train": images[:2], "y_train": np.array([0, 1], np.uint8),
                               "x_test": images, "y_test": np.array(MNIST_ACTUAL, np.uint8)}, mnist.DataParams(), 0)
    outputs[data / "mnist" / "test.parquet"] = parquet_bytes(tables["test"])
    write_outputs(outputs)
    return {"metrics": metrics, "plots": plots, "data": data, "figures": root / "figures",
            "out": root / "reports" / "report.html"}


def figures_argv(paths: dict[str, Path], task: str) -> list[str]:
    """figures@<task>'s arguments, laid out as dvc.yaml lays them out."""
    return [task, "--metrics", str(paths["metrics"] / f"{task}.json"), "--plots", str(paths["plots"] / task),
            "--data", str(paths["data"] / task), "--out", str(paths["figures"] / f"{task}.json")]


def argv(paths: dict[str, Path]) -> list[str]:
    return ["--metrics", str(paths["metrics"]), "--figures", str(paths["figures"]), "--out", str(paths["out"])]


def build(paths: dict[str, Path]) -> str:
    """Every task's figures stage, then the report stage: the page."""
    for task in TASK_NAMES:
        figures_stage.main(figures_argv(paths, task))
    report.main(argv(paths))
    return paths["out"].read_text()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[dict[str, Path], str]:
    paths = make_inputs(tmp_path_factory.mktemp("report"))
    return paths, build(paths)


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


# --- the whole stage ---

def test_main_writes_one_self_contained_page_with_every_figure(built):
    paths, page = built
    assert [p.name for p in paths["out"].parent.iterdir()] == ["report.html"]  # no temp files left
    pngs = embedded_pngs(page)
    assert len(pngs) == EXPECTED_IMAGES
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in pngs)
    for title in SECTION_TITLES:
        assert f"<h2>{title}</h2>" in page
    assert 'src="http' not in page and "<script" not in page and "<link" not in page
    assert not re.search(r'(src|href)="(?!data:|#)', page), "every reference is a data URI or an in-page anchor"


def test_metrics_table_shows_every_dataset_to_four_significant_digits(built):
    _, page = built
    table = page[page.index('<table class="metrics">'):page.index("</table>")]

    def row(key: str) -> list[str]:
        match = re.search(rf'<tr><th scope="row" title="{re.escape(key)}">([^<]*)</th>(.*?)</tr>', table)
        assert match, key
        return [match.group(1), *re.findall(r'<td class="value">([^<]*)</td>', match.group(2))]

    assert row("test/relative_mse") == ["Test relative MSE", "0.01235", "–", "–"]
    assert row("ood/mse_vs_truth") == ["Out-of-domain MSE vs truth", "42.42", "–", "–"]
    assert row("test/accuracy") == ["Test accuracy", "–", "0.8765", "0.6667"]
    assert row("train/epochs_run") == ["Train epochs run", "3", "3", "3"]
    assert row("test/accuracy_digit_4") == ["Test accuracy (digit 4)", "–", "–", "0.5000"]


def test_captions_carry_numbers_computed_from_the_inputs(built):
    _, page = built
    assert "Synthetic regression (Test relative MSE 0.01235)" in page  # intro
    assert "0.2000 on the domain, 42.42 out of domain (212× larger)" in page
    assert "6 test patients: accuracy 87.65 %" in page and "ROC AUC 0.8750" in page
    assert "2 of 6 test images mispredicted (33.33 %)" in page
    assert "most frequent confusion 1 → 7 (1 image)" in page


# --- results over seeds ---

def test_learning_curves_are_captioned_with_their_seed_count(built):
    _, text = built
    assert text.count("final val accuracy 80.00 %; mean over 3 seeds; band: 95 % interval of the mean.") == 2
    assert "Synthetic regression: 3 epochs; final train/val loss 1.000 / 1.100 (lowest val loss 1.100 at " \
           "epoch 3); one seed." in text


def test_intro_gives_each_headline_as_its_mean_and_margin_over_several_seeds(built):
    intro = re.search(r'<p class="intro">(.*?)</p>', built[1]).group(1)
    # ROC AUC 0.89, 0.90, 0.91: the 95 % interval's half-width is t(2) * 0.01 / sqrt(3) = 0.0248
    assert "Heart disease (Test ROC AUC 0.9000 ± 0.025 over 3 seeds)" in intro
    assert "MNIST (Test accuracy 0.6667 ± 0.025 over 3 seeds)" in intro
    assert "Synthetic regression (Test relative MSE 0.01235)" in intro   # one seed: no interval


def test_metrics_table_says_its_values_are_means_over_the_seeds(built):
    assert "All metrics written by the evaluate stages, the mean over each task&#x27;s seeds (1, 3), to 4 " \
           "significant digits." in built[1]


@pytest.mark.parametrize("accuracies, said", [  # the seeds' test accuracies; where the notebook's 0.9839 falls
    ([0.9772, 0.9790, 0.9800, 0.9835, 0.9800],
     "Test accuracy 0.9799 ± 0.0028 (95 % interval of the mean over 5 seeds; seeds 0.9772–0.9835); the lab "
     "notebook's 0.9839 (one run of the same network) lies above every seed and outside the interval."),
    ([0.980, 0.984, 0.988], "lies within the seeds' range and inside the interval."),
    ([0.980, 0.982], "lies above every seed and inside the interval."),   # two seeds: a wide interval
    ([0.990, 0.991, 0.992], "lies below every seed and outside the interval."),
    ([0.990], "Test accuracy 0.9900 (one seed, so no interval); the lab notebook's 0.9839 (one run of the same "
              "network) is below it."),
])
def test_mnist_caption_places_the_notebooks_test_accuracy_among_the_seeds(tmp_path, accuracies, said):
    paths = make_inputs(tmp_path)
    seeds = {42 + index: {**METRICS["mnist"], "test/accuracy": accuracy} for index, accuracy in enumerate(accuracies)}
    (paths["metrics"] / "mnist.json").write_text(json.dumps(metrics_over_seeds(seeds)))
    figures_stage.main(figures_argv(paths, "mnist"))
    (section,) = [section for section in read_fragment(paths["figures"] / "mnist.json").sections
                  if section.title == "MNIST confusion matrix"]
    assert section.caption.startswith("Test accuracy ") and said in section.caption
    assert "The matrix shows seed 42's network" in section.caption   # evaluate's plots: the first seed's
    assert mnist_figures.NOTEBOOK_TEST_ACCURACY == 0.9839


def test_mispredicted_gallery_lists_exactly_the_wrong_rows_as_true_over_predicted(built):
    _, page = built
    alt = re.search(r'alt="(mispredicted test digits[^"]*)"', page).group(1)
    assert re.findall(r"#(\d+): (\d) / (\d)", alt) == [("1", "1", "7"), ("4", "4", "9")]


def test_same_inputs_give_byte_identical_figures_and_report(built, tmp_path):
    paths, page = built
    again = {**paths, "figures": tmp_path / "figures", "out": tmp_path / "again.html"}
    assert build(again) == page
    for task in TASK_NAMES:
        assert (again["figures"] / f"{task}.json").read_bytes() == (paths["figures"] / f"{task}.json").read_bytes()


# --- failures: one line naming the file, non-zero exit, previous outputs untouched ---

def assert_fails_in_one_line(stage: str, main, out: Path, named: str, capsys) -> None:
    """`main` ends in one `<stage>: error:` line naming `named` and `dvc repro`; `out` keeps its old bytes."""
    previous = b"the previous output\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(previous)
    with pytest.raises(SystemExit) as exit_info:
        run_stage(stage, main)
    assert exit_info.value.code != 0
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and message.startswith(f"{stage}: error: ")
    assert named in message and "dvc repro" in message
    assert out.read_bytes() == previous
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


@pytest.mark.parametrize("relative, damage", [
    ("metrics/heart.json", "delete"),
    ("metrics/mnist.json", "{not json"),
    ("plots/synthetic/learning_curve.csv", "delete"),
    ("plots/heart/learning_curve_band.csv", "delete"),
    ("plots/mnist/learning_curve_band.csv", "epoch,mean,low,high,seeds\n1,1.0,0.5,1.5,3\n"),  # no curve column
    ("plots/synthetic/evaluation/predictions.csv", "x,y_true\n1,2\n"),   # columns missing
    ("plots/heart/evaluation/roc.csv", "\xff\xfe\x00garbage"),
    ("plots/mnist/evaluation/confusion.csv", "index,actual,predicted\n99,1,2\n"),  # row beyond the test split
    ("data/synthetic/train.parquet", "delete"),
    ("data/mnist/test.parquet", "not parquet at all"),
])
def test_a_tasks_missing_or_corrupt_input_fails_its_figures_in_one_line(tmp_path, capsys, relative, damage):
    paths = make_inputs(tmp_path)
    target, task = tmp_path / relative, relative.split("/")[1].removesuffix(".json")
    if damage == "delete":
        target.unlink()
    else:
        target.write_bytes(damage.encode("latin-1"))
    # The MNIST rows check compares two files: the task names the one it cannot trust by its name.
    named = str(target) if "mnist/evaluation" not in relative else target.name
    assert_fails_in_one_line("figures", lambda: figures_stage.main(figures_argv(paths, task)),
                             paths["figures"] / f"{task}.json", named, capsys)


@pytest.mark.parametrize("relative, damage", [
    ("figures/heart.json", "delete"),
    ("figures/mnist.json", "{not json"),
    ("figures/synthetic.json", '{"name": "synthetic"}'),   # not what figures@synthetic writes
    ("metrics/heart.json", "delete"),
])
def test_a_missing_or_corrupt_figures_or_metrics_file_fails_the_report_in_one_line(built, tmp_path, capsys,
                                                                                    relative, damage):
    source, _ = built
    paths = {**source, "figures": tmp_path / "figures", "metrics": tmp_path / "metrics",
             "out": tmp_path / "reports" / "report.html"}
    for folder in ("figures", "metrics"):
        for file in source[folder].iterdir():
            (paths[folder] / file.name).parent.mkdir(parents=True, exist_ok=True)
            (paths[folder] / file.name).write_bytes(file.read_bytes())
    target = tmp_path / relative
    if damage == "delete":
        target.unlink()
    else:
        target.write_text(damage)
    assert_fails_in_one_line("report", lambda: report.main(argv(paths)), paths["out"], str(target), capsys)


def test_the_report_assembles_and_draws_nothing(built, tmp_path):
    """The page stage loads no plotting library: a task's figures are drawn by its own stage only."""
    paths, page_text = built
    out = tmp_path / "report.html"
    probe = ("import runpy, sys; sys.argv = ['stages.report', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('stages.report', run_name='__main__', alter_sys=True)\n"
             "except SystemExit as e:\n    assert not e.code\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'seaborn', 'sklearn'}))")
    result = subprocess.run([sys.executable, "-c", probe, *argv({**paths, "out": out})], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "[]"
    assert out.read_text() == page_text


@pytest.mark.parametrize("document", [
    {"test/accuracy": 0.9},                                              # one run's flat metrics, from before seeds
    {"mean": {"test/accuracy": 0.9}, "seeds": {"42": {"test/accuracy": {"nested": 1}}}},
    [{"mean": {}}],                                                      # not an object at all
    {"mean": {"test/accuracy": 0.9}, "seeds": {"42": {"test/accuracy": 0.9}}},  # no spread
])
def test_metrics_that_are_not_evaluates_numbers_over_seeds_are_refused(tmp_path, document):
    path = tmp_path / "heart.json"
    path.write_text(json.dumps(document))
    with pytest.raises(StageError, match="metrics over seeds"):
        inputs.read_metrics_document(path)


# --- the pure pieces ---

def test_misprediction_figure_titles_each_digit_true_over_predicted_in_test_order():
    confusion = pd.DataFrame({"index": [5, 0, 3, 1, 2], "actual": [3, 1, 8, 2, 2], "predicted": [5, 1, 0, 2, 7]})
    wrong = mnist_figures.mispredicted(confusion)
    assert wrong["index"].tolist() == [2, 3, 5]
    fig = mnist_figures.misprediction_figure(np.zeros((6, 28, 28), np.uint8), wrong, columns=4)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["2 / 7", "8 / 0", "3 / 5"]


def test_mispredicted_stops_at_the_limit():
    confusion = pd.DataFrame({"index": range(40), "actual": [1] * 40, "predicted": [2] * 40})
    assert mnist_figures.mispredicted(confusion)["index"].tolist() == list(range(mnist_figures.MAX_MISPREDICTED))


def test_learning_curve_has_log_epochs_and_an_accuracy_panel_only_for_classifiers():
    curve = pd.DataFrame({"epoch": [1, 2, 3], "train/loss": [3.0, 2.0, 1.0], "val/loss": [3.0, 2.5, 2.0]})
    regression = figures.learning_curve_figure(curve, "r")
    classifier = figures.learning_curve_figure(
        curve.assign(**{"train/accuracy": [0.5, 0.6, 0.7], "val/accuracy": [0.5, 0.5, 0.6]}), "c")
    assert len(regression.axes) == 1 and len(classifier.axes) == 2
    assert all(ax.get_xscale() == "log" for ax in classifier.axes)
    assert [line.get_label() for line in classifier.axes[1].lines] == ["train/accuracy", "val/accuracy"]


def test_learning_curve_shades_each_curves_interval_only_with_several_seeds():
    several = seed_curves("heart")

    def bands(curves, band=True):
        fig = figures.learning_curve_figure(mean_curve(curves), "t", curve_band(curves) if band else None)
        return fig, [[c for c in ax.collections if isinstance(c, PolyCollection)] for ax in fig.axes]

    fig, (loss, accuracy) = bands(several)
    assert len(loss) == len(accuracy) == 2   # train and val on each panel
    assert fig.axes[0].get_yscale() == "log" and all(ax.get_xscale() == "log" for ax in fig.axes)
    interval = curve_band(several).query("curve == 'train/loss'")
    heights = loss[0].get_paths()[0].vertices[:, 1]
    assert (heights.min(), heights.max()) == pytest.approx((interval["low"].min(), interval["high"].max()))
    assert np.allclose(loss[0].get_facecolor()[0][:3], fig.axes[0].lines[0].get_color())   # its curve's colour
    assert bands({42: several[42]})[1] == [[], []]   # one seed: the band file's low/high are empty
    assert bands(several, band=False)[1] == [[], []]


def test_mean_and_margin_gives_the_half_width_and_seed_count_only_for_several_seeds():
    several = metrics_over_seeds({42: {"test/accuracy": 0.97}, 43: {"test/accuracy": 0.98},
                                  44: {"test/accuracy": 0.99}})
    assert lab.mean_and_margin(several, "test/accuracy") == "0.9800 ± 0.025 over 3 seeds"
    assert lab.mean_and_margin(metrics_over_seeds({42: {"test/accuracy": 0.97}}), "test/accuracy") == "0.9700"
    assert lab.mean_and_margin(several, "test/roc_auc") == "n/a"


def test_extrapolation_figure_shades_both_sides_outside_the_domain():
    x = np.linspace(-8, 8, 17)
    grid = pd.DataFrame({"x": x, "y_true": x, "y_pred": x, "region": np.where(np.abs(x) <= 5, "domain", "extrapolation")})
    ax = synthetic_figures.extrapolation_figure(grid).axes[0]
    spans = sorted(tuple(np.round(patch.get_x() + np.array([0, patch.get_width()]), 6)) for patch in ax.patches)
    assert spans == [(-8.0, -5.0), (5.0, 8.0)]


def test_roc_figure_puts_the_auc_in_its_title():
    roc = pd.DataFrame({"fpr": [0.0, 0.0, 0.5, 1.0], "tpr": [0.0, 0.5, 1.0, 1.0]})
    assert figures.roc_auc(roc) == pytest.approx(0.875)
    assert "AUC = 0.875" in figures.roc_figure(roc, "Heart ROC").axes[0].get_title()


def test_confusion_counts_cover_every_label_even_when_absent():
    counts = figures.confusion_counts(pd.DataFrame({"actual": [0, 0, 2], "predicted": [0, 2, 2]}), [0, 1, 2])
    assert counts.to_numpy().tolist() == [[1, 0, 1], [0, 0, 0], [0, 0, 1]]


def test_style_palette_and_scores_are_seaborns_and_scikit_learns_without_importing_them():
    """The figures stage writes out seaborn's style and palette and scores with numpy and pandas (importing
    seaborn loads scipy.stats: about 1 s of the stage); here they are held equal to the libraries'."""
    import seaborn as sns
    from sklearn import metrics as skm

    seaborn_style = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.8)}
    assert figures.STYLE == {key: value for key, value in seaborn_style.items() if key != "image.cmap"}
    assert [figures.TRAIN_COLOR, figures.TEST_COLOR, figures.TRUTH_COLOR, figures.FIT_COLOR] == \
        list(sns.color_palette("deep", 4))
    rng = np.random.default_rng(0)
    actual, score = rng.integers(0, 2, 200), rng.random(200)
    fpr, tpr, _ = skm.roc_curve(actual, score)
    assert figures.roc_auc(pd.DataFrame({"fpr": fpr, "tpr": tpr})) == pytest.approx(skm.auc(fpr, tpr), abs=1e-12)
    actual, predicted = rng.integers(0, 10, 500), rng.integers(0, 9, 500)  # digit 9 never predicted
    counts = figures.confusion_counts(pd.DataFrame({"actual": actual, "predicted": predicted}), list(range(10)))
    assert counts.to_numpy().tolist() == skm.confusion_matrix(actual, predicted, labels=list(range(10))).tolist()


def test_confusion_heatmap_colours_and_annotates_its_cells_as_seaborn_does():
    import seaborn as sns
    from matplotlib.figure import Figure

    counts = np.array([[50, 3, 0], [7, 20, 13], [0, 1, 99]])
    share = counts / counts.sum(axis=1, keepdims=True)
    drawn = {}
    for name, draw in {
            "ours": lambda ax: figures.heatmap(ax, share, counts, ["a", "b", "c"], "share", fontsize=10),
            "seaborn": lambda ax: sns.heatmap(share, annot=counts, fmt="d", cmap="Blues", vmin=0, vmax=1, ax=ax,
                                              square=True, xticklabels=["a", "b", "c"], yticklabels=["a", "b", "c"])}.items():
        ax = Figure().subplots()
        draw(ax)
        mesh = ax.collections[0]
        drawn[name] = ([(text.get_position(), text.get_text(), text.get_color()) for text in ax.texts],
                       mesh.cmap(mesh.norm(np.ravel(mesh.get_array()))),  # each cell's colour
                       ax.get_ylim(), [tick.get_text() for tick in ax.get_yticklabels()])
    ours, theirs = drawn["ours"], drawn["seaborn"]
    assert ours[0] == theirs[0]  # each count, where it is, dark or white
    assert np.allclose(ours[1], theirs[1]) and ours[2] == theirs[2] and ours[3] == theirs[3]


def test_heart_confusion_matrix_names_the_classes():
    confusion = pd.DataFrame({"actual": [0, 0, 1, 1, 1, 0], "predicted": [0, 1, 1, 1, 1, 0]})
    (section,) = heart_figures.report_sections(TaskResults(
        "heart", "Heart disease", METRICS["heart"], spreads={}, seeds={42: METRICS["heart"]}, curve=pd.DataFrame(),
        band=pd.DataFrame(), plots={"roc.csv": pd.DataFrame({"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]}),
                                    "confusion.csv": confusion}, splits={}))
    assert "0 missed and 1 false alarms" in section.caption  # the caption reads the counts by class code
    fig = figures.confusion_figure(confusion, list(heart.CLASS_NAMES), "t", list(heart.CLASS_NAMES.values()))
    ax = fig.axes[0]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["no disease", "disease"]
    assert [label.get_text() for label in ax.get_yticklabels()] == ["no disease", "disease"]
    assert [int(text.get_text()) for text in ax.texts] == [2, 1, 0, 3]  # the counts, under the names


def test_commands_in_the_text_show_as_code_not_as_backticks(built):
    _, text = built
    assert "Built by <code>dvc repro</code> from" in text and "`" not in text
    assert page.text_html("run `a < b` & `c`") == "run <code>a &lt; b</code> &amp; <code>c</code>"


def test_png_bytes_carry_no_software_version():
    png = figures.figure_to_png(figures.roc_figure(pd.DataFrame({"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]}), "t"))
    assert b"matplotlib" not in png.lower()


def test_html_page_escapes_text_and_links_sections_in_page():
    text = page.html_page("A <b> & c", [page.Section("First part", 'say "hi"', (page.Image("QUJD", "a<alt>"),)),
                                          page.Section("Second", html="<table></table>")], intro="x < y")
    assert "<title>A &lt;b&gt; &amp; c</title>" in text and "<p class=\"intro\">x &lt; y</p>" in text
    assert '<a href="#first-part">First part</a>' in text and '<section id="first-part">' in text
    assert '<img src="data:image/png;base64,QUJD" alt="a&lt;alt&gt;">' in text
    assert "<table></table>" in text


@pytest.mark.parametrize("key, name", [
    ("test/accuracy_digit_3", "Test accuracy (digit 3)"),
    ("ood/mse_vs_truth", "Out-of-domain MSE vs truth"),
    ("test/roc_auc", "Test ROC AUC"),
    ("val/loss", "Validation loss"),
])
def test_readable_metric_names(key, name):
    assert page.readable_metric_name(key) == name


@pytest.mark.parametrize("value, text", [(0.012345678, "0.01235"), (1.0, "1.000"), (123456.0, "1.235e+05"),
                                         (300, "300"), (float("nan"), "nan")])
def test_format_value_keeps_four_significant_digits(value, text):
    assert page.format_value(value) == text
