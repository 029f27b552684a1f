"""`textvae report`: the self-contained HTML page, its Markdown twin, published references, generated text."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import random_sentences, textvae
from PIL import Image

from textvae.errors import TextVAEError
from textvae.reports.figures import curve_panels
from textvae.reports.generation import GenerationOptions
from textvae.reports.html import write_html_report
from textvae.reports.reference import Comparability, match_reference

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "col", "hr", "input", "link", "source", "wbr"}


class StrictHTML(HTMLParser):
    """Checks that every element is closed in order; collects <img> sources, links and comparison rows."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.images: list[str] = []
        self.tags: set[str] = set()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        self.urls += [value for key, value in attrs.items() if key in ("src", "href") and value]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        assert tag in VOID, f"<{tag} /> is not a void element"
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        assert tag not in VOID, f"</{tag}> closes a void element"
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def parse(path: Path) -> StrictHTML:
    parser = StrictHTML()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    assert parser.stack == [], f"unclosed: {parser.stack}"
    return parser


def assert_png(data: bytes) -> None:
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.width > 100 and image.height > 100


def fake_run(
    directory: Path,
    recipe_name: str,
    kl: float = 1.5,
    model_type: str = "lstm_vae",
    aggressive: bool = False,
    environment: dict | None = None,
    test_file: str = "data/missing/test.txt",
) -> Path:
    """A run directory as `textvae train` + `textvae eval` leave it (without the model)."""
    directory.mkdir(parents=True)
    recipe = {
        "name": recipe_name,
        "description": f"{recipe_name} for tests",
        "data": {"train": "train.txt", "valid": "valid.txt", "test": test_file},
        "model": {"type": model_type, "latent_dim": 4, "embed_dim": 8, "hidden_dim": 16},
        "objective": {"type": "elbo", "beta": 1.0, "kl_schedule": {"type": "linear"}},
    }
    (directory / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    inner = {"inner_steps": 12.0} if aggressive else {}
    steps = [
        {"kind": "step", "step": s, "epoch": s // 10, "loss": 60.0 - s, "rec": 59.0 - s, "kl": kl, "kl_weight": 0.1 * s}
        | {"ppl": 90.0 - s, "lr": 1.0, "tokens_per_s": 1000.0}
        | inner
        for s in (2, 4, 6, 8, 10, 12, 14, 16, 18, 20)
    ]
    epochs = [
        {"kind": "epoch", "epoch": e, "step": 10 * e, "train_loss": 50.0, "val_elbo_nll": 52.0 - e, "val_rec": 51.0}
        | {"val_kl": kl, "val_ppl": 80.0 - e, "val_mi": 0.4 * e, "val_au": e}
        | ({"train_inner_steps": 12.0, "aggressive": e == 1, "aggressive_switched_off": e == 2} if aggressive else {})
        for e in (1, 2)
    ]
    lines = [json.dumps(r) for r in steps[:5] + epochs[:1] + steps[5:] + epochs[1:]]
    (directory / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    metrics = {
        "iw_nll": 44.6,
        "elbo_nll": 45.1,
        "rec": 43.5,
        "kl": kl,
        "mi": 0.5,
        "au": 2,
        "iw_ppl": 57.7,
        "ppl": 58.4,
        "recon_bleu": 12.3,
        "split": "test",
        "limit": 100,
        "iw_samples": 500,
        "mi_batch_size": 32,
        "au_threshold": 0.01,
        "kl_per_dim": [kl / 4] * 4,
        "au_variances": [0.5, 0.02, 0.001, 0.0],
    }
    (directory / "eval.json").write_text(json.dumps(metrics))
    if environment is not None:
        (directory / "environment.json").write_text(json.dumps(environment))
    return directory


class FakeRun:
    """The interface of `textvae.api.Run` used by the report, decoding fixed texts full of markup."""

    def __init__(self, directory: Path, has_latent: bool = True, test: str | None = None) -> None:
        recipe = yaml.safe_load((directory / "recipe.yaml").read_text())
        data = SimpleNamespace(test=test or recipe["data"]["test"], valid=recipe["data"]["valid"], format="text")
        self.recipe = SimpleNamespace(data=data)
        self.model = SimpleNamespace(has_latent=has_latent)
        self.directory = directory
        self.is_image_model = False

    def sample(self, n, seed=0, strategy="sample", **kw):
        assert strategy == "sample"
        return [f"<unk> sample {i} </s> <script>alert(1)</script>" for i in range(n)]

    def reconstruct(self, texts, seed=0, strategy="greedy", **kw):
        if not self.model.has_latent:
            raise TypeError("a language model has no encoder")
        return [f"rec of {text} & <unk>" for text in texts]

    def interpolate(self, a, b, steps=8, slerp=False, strategy="greedy", **kw):
        if not self.model.has_latent:
            raise TypeError("a language model has no encoder")
        return [(i / (steps - 1), f"point {i} <b>bold</b>") for i in range(steps)]


@pytest.fixture
def fake_api(monkeypatch):
    """Replace `textvae.api.load_run` by FakeRun; `fake_api(has_latent=..., test=...)` changes the fake."""
    settings: dict = {}

    def load_run(directory, device="cpu"):
        return FakeRun(Path(directory), **settings)

    monkeypatch.setattr("textvae.api.load_run", load_run)
    return settings.update


def section(text: str, start: str, end: str = "<section") -> str:
    """The HTML between `start` and the next `end`."""
    begin = text.index(start)
    stop = text.find(end, begin + len(start))
    return text[begin : stop if stop >= 0 else None]


def test_html_is_self_contained_balanced_and_every_image_a_png(tmp_path: Path):
    env = {"textvae": "0.1.0", "python": "3.11.7", "torch": "2.13.0", "device": "cpu", "git_commit": "abc123"}
    a = fake_run(tmp_path / "runs" / "vanilla", "yahoo-mini-vanilla", environment=env)
    b = fake_run(tmp_path / "runs" / "aggressive", "yahoo-mini-aggressive", kl=3.0, aggressive=True)
    html, markdown = write_html_report([a, b], tmp_path / "out" / "report.html")
    page = parse(html)
    assert not page.tags & {"script", "link", "iframe", "object"}
    assert all(url.startswith(("data:image/png;base64,", "#")) for url in page.urls), page.urls
    assert len(page.images) == 3  # training curves + one latent-usage figure per run
    for src in page.images:
        assert_png(base64.b64decode(src.removeprefix("data:image/png;base64,"), validate=True))
    text = html.read_text()
    assert "<style>" in text and "<details><summary>recipe.yaml</summary>" in text
    assert "abc123" in section(text, 'id="run-vanilla"') and "git_commit" in section(text, 'id="run-vanilla"')
    assert "not recorded" in section(text, 'id="run-aggressive"')
    assert "aggressive training switched off after epoch 2" in text
    assert sorted(p.name for p in html.parent.iterdir()) == [
        "report.html",
        "report.md",
        "report_aggressive_latent_usage.png",
        "report_curves.png",
        "report_vanilla_latent_usage.png",
    ]


def test_markdown_twin_has_the_comparison_table_and_its_png_files(tmp_path: Path):
    runs = [fake_run(tmp_path / name, f"yahoo-mini-{name}", kl=kl) for name, kl in (("anneal", 1.0), ("lm", 0.0))]
    runs.append(fake_run(tmp_path / "story", "tinystories-word-dropout"))
    _, markdown = write_html_report(runs, tmp_path / "report.html")
    text = markdown.read_text()
    lines = text.splitlines()
    head = lines.index("| run | NLL | KL | MI | AU | PPL | recon BLEU | evaluation |")
    table = lines[head : lines.index("", head)]
    assert table[1] == "|---|---:|---:|---:|---:|---:|---:|---|"
    rows = table[2:]
    assert [r.split(" | ")[0] for r in rows[:3]] == ["| anneal", "| lm", "| story"]
    evaluation = "test split, first 100 documents, IW k = 500"
    assert rows[0] == f"| anneal | 44.60 | 1.00 | 0.50 | 2 | 57.70 | 12.30 | {evaluation} |"
    published = rows[3:]  # He et al.'s VAE + anneal and LSTM-LM rows, labelled; nothing for the story VAE
    assert len(published) == 2 and all("not comparable (CPU-scaled recipe)" in r for r in published)
    assert any(r.startswith("| VAE + anneal · Yahoo | 328.60 | 0.00 | 0.00 |") for r in published)
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert "report_curves.png" in images and "report_anneal_latent_usage.png" in images
    for name in images:
        assert_png((tmp_path / name).read_bytes())


def test_reference_column_only_for_a_recipe_that_matches(tmp_path: Path):
    full = fake_run(tmp_path / "full", "yahoo-aggressive-anneal")
    story = fake_run(tmp_path / "story", "tinystories-word-dropout")
    html, _ = write_html_report([full, story], tmp_path / "report.html")
    text = html.read_text()
    full_html, story_html = section(text, 'id="run-full"'), section(text, 'id="run-story"')
    assert "published: Aggressive + anneal" in full_html and "published, same setting" in full_html
    assert "326.70" in full_html and '<td class="num">15</td>' in full_html  # camera-ready row, AU 15
    assert "published" not in story_html and '<th>metric</th><th class="num">this run</th></tr>' in story_html


@pytest.mark.parametrize(
    ("name", "comparability", "models"),
    [
        ("yahoo-vanilla", Comparability.SAME_SETTING, ["VAE"]),
        ("yahoo-aggressive-anneal", Comparability.SAME_SETTING, ["Aggressive + anneal"] * 2),
        ("yelp-savae-anneal", Comparability.SAME_SETTING, ["SA-VAE + anneal"]),
        ("yahoo-mini-anneal", Comparability.SCALED, ["VAE + anneal"]),
        ("yahoo-mini-lm", Comparability.SCALED, ["LSTM-LM (exact)"]),
        ("ptb-vanilla", Comparability.ANCHOR, ["texar VAE-LSTM"]),
        ("yahoo-transformer-anneal", Comparability.ANCHOR, ["texar VAE, transformer decoder"]),
        ("omniglot-aggressive", Comparability.SAME_SETTING, ["Aggressive"]),
        ("yahoo-mini-freebits", None, []),
        ("tinystories-word-dropout", None, []),
        ("yahoo", None, []),
        (None, None, []),
    ],
)
def test_recipe_names_match_published_settings(name, comparability, models):
    matches = match_reference(name)
    assert [m.comparability for m in matches[:1]] == ([comparability] if comparability else [])
    assert [row.model for row in (matches[0].rows if matches else ())] == models


def test_published_numbers_are_transcribed():
    (yahoo,) = match_reference("yahoo-beta0.2")[0].rows
    assert (yahoo.dataset, yahoo.nll, yahoo.kl, yahoo.mi) == ("yahoo", 333.1, 18.7, 3.4)
    submitted, camera = match_reference("yelp-aggressive-anneal")[0].rows
    assert (submitted.nll, submitted.kl, submitted.mi, camera.au) == (355.9, 3.7, 2.3, 11)
    (ptb,) = match_reference("ptb-anneal")[0].rows
    assert (ptb.nll, ptb.ppl) == (102.10, 105.48)
    label = match_reference("yahoo-mini-anneal")[0].label
    assert label == "published, full Yahoo — not comparable (CPU-scaled recipe)"
    kinds = [m.comparability for m in match_reference("yahoo-anneal")]
    assert kinds == [Comparability.SAME_SETTING, Comparability.ANCHOR]


def test_generated_text_is_escaped_and_wraps(tmp_path: Path, fake_api):
    test_file = tmp_path / "test.txt"
    test_file.write_text("\nfirst <doc> & more\n\nsecond doc\nthird doc\nfourth doc\n")
    run = fake_run(tmp_path / "vae", "yahoo-mini-vanilla", test_file=str(test_file))
    options = GenerationOptions(samples=2, reconstructions=3, interpolation_steps=4)
    html, markdown = write_html_report([run], tmp_path / "report.html", generation=options)
    page = parse(html)
    assert "script" not in page.tags and "b" not in page.tags
    text = html.read_text()
    assert "&lt;unk&gt; sample 1 &lt;/s&gt; &lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "first &lt;doc&gt; &amp; more" in text and "rec of third doc &amp; &lt;unk&gt;" in text
    assert text.count("point 3 &lt;b&gt;bold&lt;/b&gt;") == 1 and '<td class="t">1.00</td>' in text
    assert "overflow-wrap: anywhere" in text and "white-space: pre-wrap" in text
    md = markdown.read_text()
    assert "1. `<unk> sample 0 </s> <script>alert(1)</script>`" in md
    assert "   reconstruction: `rec of first <doc> & more & <unk>`" in md


def test_a_missing_test_file_and_a_language_model_give_notes(tmp_path: Path, fake_api):
    vae = fake_run(tmp_path / "vae", "yahoo-mini-vanilla", test_file="nowhere/test.txt")
    html, _ = write_html_report([vae], tmp_path / "report.html", generation=GenerationOptions())
    text = html.read_text()
    assert "test file nowhere/test.txt not found" in text and "<h4>Samples</h4>" in text
    assert "<h4>Reconstructions</h4>" not in text
    fake_api({"has_latent": False})
    lm = fake_run(tmp_path / "lm", "yahoo-mini-lm", model_type="lstm_lm")
    html, _ = write_html_report([lm], tmp_path / "lm.html", generation=GenerationOptions())
    text = html.read_text()
    assert "a language model has no latent space: prior samples only" in text
    assert "ancestral sampling from the language model" in text


def test_identical_reconstructions_are_flagged_as_collapse(tmp_path: Path, monkeypatch, fake_api):
    test_file = tmp_path / "test.txt"
    test_file.write_text("one\ntwo\nthree\n")
    monkeypatch.setattr(FakeRun, "reconstruct", lambda self, texts, **kw: ["the same"] * len(texts))
    run = fake_run(tmp_path / "vae", "yahoo-mini-vanilla", test_file=str(test_file))
    html, _ = write_html_report([run], tmp_path / "report.html", generation=GenerationOptions())
    assert '<p class="warn">warning: every reconstruction decodes to the same text' in html.read_text()


def test_curve_panels_skip_what_nobody_logged(tmp_path: Path):
    vae = fake_run(tmp_path / "vae", "yahoo-mini-vanilla")
    agg = fake_run(tmp_path / "agg", "yahoo-mini-aggressive", aggressive=True)
    logs = {p.name: [json.loads(line) for line in (p / "metrics.jsonl").read_text().splitlines()] for p in (vae, agg)}
    x, panels = curve_panels(logs)
    titles = [panel.title for panel, _ in panels]
    assert x == "step" and len(titles) == 8 and titles[-1].startswith("aggressive")
    _, panels = curve_panels({"vae": logs["vae"]})
    assert not any(panel.step_key == "inner_steps" for panel, _ in panels)
    _, panels = curve_panels({"lm": logs["vae"]}, without_latent={"lm"})
    assert {panel.epoch_key for panel, _ in panels}.isdisjoint({"val_kl", "val_mi", "val_au"})


def test_errors_and_atomic_overwrite(tmp_path: Path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextVAEError, match="empty: not a textvae run directory"):
        write_html_report([tmp_path / "empty"], tmp_path / "report.html")
    run = fake_run(tmp_path / "vae", "yahoo-mini-vanilla")
    with pytest.raises(TextVAEError, match="must end in .html"):
        write_html_report([run], tmp_path / "report.md")
    html, _ = write_html_report([run], tmp_path / "report.html")
    before = html.read_bytes()

    def crash(*args, **kwargs):
        raise RuntimeError("crash while rendering")

    monkeypatch.setattr("textvae.reports.html.render_html", crash)
    with pytest.raises(RuntimeError):
        write_html_report([run], tmp_path / "report.html")
    assert html.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_report_not_a_run_directory_is_one_line(tmp_path: Path):
    (tmp_path / "notarun").mkdir()
    proc = textvae("report", tmp_path / "notarun", "-o", tmp_path / "r.html", "--no-generation")
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "notarun: not a textvae run directory" in proc.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, torch_single_thread) -> Path:
    """A really trained and evaluated tiny LSTM VAE (one epoch, about 3 s)."""
    from textvae.api import evaluate_run, train
    from textvae.config import build_recipe

    root = tmp_path_factory.mktemp("tiny")
    for split, n, seed in (("train", 200, 1), ("valid", 30, 2), ("test", 20, 3)):
        (root / f"{split}.txt").write_text("\n".join(random_sentences(n, seed)) + "\n")
    recipe = {
        "name": "tiny-vanilla",
        "data": {split: str(root / f"{split}.txt") for split in ("train", "valid", "test")}
        | {"batch_size": 32, "cache_dir": str(root / "hf-cache")},
        "model": {"embed_dim": 8, "hidden_dim": 16, "latent_dim": 2},
        "train": {"epochs": 1, "log_every": 2},
        "eval": {"iw_samples": 5},
    }
    run = train(build_recipe(recipe, "tiny recipe"), root / "run")
    (root / "run" / "eval.json").write_text(json.dumps(evaluate_run(run, "test", iw_samples=5)))
    return root / "run"


def test_cli_report_on_a_trained_run_with_generation(tiny_run: Path, tmp_path: Path):
    out = tmp_path / "report.html"
    proc = textvae("report", tiny_run, "-o", out, "--samples", "3", "--interpolation-steps", "3", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    page = parse(out)
    assert len(page.images) == 2  # curves + latent usage
    text = out.read_text()
    assert "<h4>Samples</h4>" in text and "<h4>Reconstructions</h4>" in text and "<h4>Interpolation</h4>" in text
    assert "started_utc" in text  # environment.json written by textvae train
    assert "| run | NLL | KL | MI | AU | PPL | recon BLEU | evaluation |" in (tmp_path / "report.md").read_text()


def test_sample_quality_columns_appear_only_when_measured(tmp_path: Path):
    plain = fake_run(tmp_path / "plain", "yahoo-mini-vanilla")
    sampled = fake_run(tmp_path / "sampled", "yahoo-mini-anneal")
    metrics = json.loads((sampled / "eval.json").read_text())
    (sampled / "eval.json").write_text(json.dumps({**metrics, "sample_distinct_1": 0.25, "sample_unigram_kl": 0.75}))
    _, markdown = write_html_report([plain, sampled], tmp_path / "report.html")
    text = markdown.read_text()
    assert "| sample_unigram_kl | 0.75 |" in text  # the sampled run's own metrics table
    only_plain = write_html_report([plain], tmp_path / "plain.html")[1].read_text()
    assert "sample_distinct_1" not in only_plain and "sample_unigram_kl" not in only_plain
