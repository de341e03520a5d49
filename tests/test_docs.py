"""The documentation site: every public name has an API entry, the guides' code runs, and the
Sphinx build (``make docs``) is warning-free."""

from __future__ import annotations

import ast
import importlib
import inspect
import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# The modules whose public names (their __all__) must each have an API entry.
PUBLIC_MODULES = (
    "adaptive_tx",
    "adaptive_tx.sparse",
    "adaptive_tx.plots",
    "adaptive_tx.compat.torch",
    "adaptive_tx.compat.keras",
)
AUTODOC = re.compile(
    r"^\s*\.\. auto(function|class|module|data|exception)::\s*(\S+)\s*$", re.MULTILINE
)
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def api_entries() -> list[tuple[str, str]]:
    """(page, dotted name) of every autodoc directive of the API reference (docs/api/)."""
    pages = sorted(p for p in (DOCS / "api").iterdir() if p.suffix in (".rst", ".md"))
    return [(page.name, m.group(2)) for page in pages for m in AUTODOC.finditer(page.read_text())]


def resolve(dotted: str):
    """The object a dotted name refers to: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            obj = getattr(obj, attribute)  # AttributeError: the entry names nothing
        return obj
    raise ModuleNotFoundError(dotted)


def public_names():
    """(qualified name, object) of every name in the __all__ of the public modules."""
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            yield f"{module_name}.{name}", getattr(module, name)


# Words about how the project was made, not about the library: its pages and docstrings speak to a
# reader who knows only the library.
ORIGIN_WORDS = re.compile(
    r"\bseeds?'|\bthe seeds\b|\bthe issue\b|\bissue's\b|\bissue #?\d|\btargets? of the issue\b"
    r"|\bthe brief\b|\bsessions?\b|\bthe lead\b",
    re.IGNORECASE,
)
# The user-facing text: the site's pages (RESULTS.md is included by docs/benchmarks.md), the README,
# and every docstring of the package.
USER_PAGES = sorted(
    [*DOCS.glob("*.md"), ROOT / "README.md", ROOT / "benchmarks" / "RESULTS.md"], key=str
)
PACKAGE_MODULES = sorted((ROOT / "adaptive_tx").rglob("*.py"))


def _docstrings(path: pathlib.Path) -> str:
    tree = ast.parse(path.read_text())
    nodes = [tree, *ast.walk(tree)]
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return "\n".join(ast.get_docstring(n) or "" for n in nodes if isinstance(n, kinds))


@pytest.mark.parametrize(
    "path", USER_PAGES + PACKAGE_MODULES, ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_user_text_speaks_of_the_library_not_of_its_making(path):
    text = path.read_text() if path.suffix == ".md" else _docstrings(path)
    found = sorted({m.group(0) for m in ORIGIN_WORDS.finditer(text)})
    assert not found, f"{path.relative_to(ROOT)} says {found}: say what the library does instead"


def test_every_api_entry_names_an_existing_object_once():
    entries = api_entries()
    assert len(entries) > 50
    missing = []
    for page, name in entries:
        try:
            resolve(name)
        except (ImportError, AttributeError):
            missing.append(f"{page}: {name}")
    assert not missing, f"API entries that name nothing: {missing}"
    names = [name for _, name in entries]
    assert len(names) == len(set(names)), "an object is documented twice"


def test_every_public_name_has_an_api_entry():
    documented = {id(resolve(name)) for _, name in api_entries()}
    missing = [name for name, obj in public_names() if id(obj) not in documented]
    assert not missing, f"public names without an entry in docs/api/: {missing}"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES[1:])
def test_all_lists_every_public_function_and_class_of_the_module(module_name):
    """A new public function of sparse, plots or a compat module cannot miss the API reference by
    missing __all__."""
    module = importlib.import_module(module_name)
    # dir(): a package's names too (adaptive_tx.sparse defines them in its submodules and
    # imports its flax ones on first use).
    defined = {
        name
        for name in dir(module)
        if not name.startswith("_")
        and (inspect.isfunction(obj := getattr(module, name)) or inspect.isclass(obj))
        and (obj.__module__ == module_name or obj.__module__.startswith(module_name + "._"))
    }
    assert defined == set(module.__all__)


def test_every_public_function_and_class_has_an_example():
    """Each docstring carries a ``>>>`` example (run as a doctest by ``--doctest-modules``)."""
    missing = [
        name
        for name, obj in public_names()
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and ">>>" not in (obj.__doc__ or "")
    ]
    assert not missing, f"public functions and classes without a doctest example: {missing}"


def run_page(page: str) -> dict:
    """Executes the ```python blocks of a docs page in order, in one namespace."""
    blocks = PYTHON_BLOCK.findall((DOCS / page).read_text())
    assert blocks, page
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/{page} (python block {i + 1})", "exec"), namespace)  # noqa: S102
    return namespace


def test_getting_started_loops_train(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    ns = run_page("getting_started.md")
    y = ns["y"]
    baseline = float((y**2).mean())  # the loss of a model that predicts 0
    assert float(ns["loss"]) < 0.2 * baseline  # the nnx MLP
    assert float(ns["plain_loss"]) < baseline  # the plain-optax linear model
    summary = ns["atx"].effective_learning_rate_summary(ns["optimizer"].opt_state)
    assert set(summary) == {"layers/0/kernel", "layers/0/bias", "layers/2/kernel", "layers/2/bias"}


def test_row_sparse_guide_runs(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    ns = run_page("row_sparse.md")  # its blocks assert that exactly the looked-up rows moved
    atx = ns["atx"]
    assert isinstance(ns["grads"]["embed"]["embedding"].get_value(), atx.RowSparse)
    assert math.isfinite(float(ns["loss"]))
    assert int(ns["optimizer"].opt_state[0].dropped_rows) == 0


def test_effective_learning_rate_guide_runs(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    ns = run_page("effective_learning_rate.md")
    rates = ns["rates"]
    assert int(rates.argmax()) == 3  # the rare feature keeps the largest rate
    assert len(ns["summaries"]) == 20
    for figure in ("rates_over_training.png", "rates.png"):
        assert (tmp_path / figure).stat().st_size > 10_000


def test_sphinx_build_is_warning_free(tmp_path):
    """``make docs``: the HTML build with warnings as errors (the demo's figures included).

    In its own process, as ``make docs`` runs it: autodoc's ``autodoc_preserve_defaults`` sets
    ``__signature__`` on the documented functions of the process that builds, which would change
    what ``inspect.signature`` tells the other tests.
    """
    warnings = tmp_path / "warnings.txt"
    out = tmp_path / "html"
    args = ["-W", "--keep-going", "-b", "html", "-q", "-w", str(warnings), str(DOCS), str(out)]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=path)
    command = [sys.executable, "-m", "sphinx", *args]
    build = subprocess.run(command, check=False, env=env, capture_output=True, text=True)
    report = warnings.read_text() if warnings.exists() else ""
    assert build.returncode == 0, report + build.stderr[-5000:]
    for figure in ("trajectories.png", "effective_lr_bars.png", "nonstationary.png"):
        assert f'src="_images/{figure}"' in (out / "effective_learning_rate.html").read_text()
    api = (out / "api" / "optimizers.html").read_text()
    assert 'id="adaptive_tx.adam"' in api and "math notranslate" in api
    # The math renders offline: MathJax is served from the site, not from a CDN.
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', api)
    assert "../_static/mathjax/tex-chtml.js" in scripts, scripts
    assert not [src for src in scripts if "://" in src], scripts
    assert (out / "_static" / "mathjax" / "tex-chtml.js").stat().st_size > 500_000
    # The row-sparse guide includes its table from benchmarks/RESULTS.md, numbers and all.
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    table = results.split("sparse_rows_cpu_table:begin -->")[1].split("sparse_rows_cpu_table:end")[
        0
    ]
    timings = re.findall(r"\d[\d.,]* ms", table)
    assert timings and all(t in (out / "row_sparse.html").read_text() for t in timings)
