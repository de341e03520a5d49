"""Sphinx configuration of the adaptive_tx documentation (``make docs``).

The API reference is autodoc on the package in this checkout (Google-style docstrings through
napoleon, math through MathJax, served from the site itself so that the math renders offline);
the guides are Markdown (myst-parser). The effective-learning-rate
guide shows the figures of ``make demo``: they are generated here, at build time, into
``docs/_generated/demo`` (gitignored), by running ``examples/sparse_feature_demo.py`` (about 15 s)
when they are missing or older than the script or the library.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # autodoc imports this checkout's adaptive_tx
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import adaptive_tx

project = "adaptive_tx"
author = "the adaptive_tx authors"
copyright = "the adaptive_tx authors, Apache-2.0"
release = adaptive_tx.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
    # MathJax 3 from the sphinx-mathjax-offline package, copied into _static/mathjax of the
    # output: the math renders without a network (no CDN).
    "sphinx-mathjax-offline",
]
mathjax_path = "mathjax/tex-chtml.js"  # relative: _static/mathjax/ of the built site

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated/**/*.md", "Thumbs.db", ".DS_Store"]

# Markdown: $...$ and $$...$$ math, ::: fences, and anchors for "#section" links.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Docstrings write `name` for a Python object: make it a cross-reference where it resolves
# (it stays literal text otherwise; nitpicky mode is off, so that is not a warning).
default_role = "py:obj"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
# Signatures as they are called (the Args sections say what each argument takes): the
# expanded unions of optax.ScalarOrSchedule would otherwise fill several lines per entry.
autodoc_typehints = "none"
# Defaults as written in the source (jnp.float32, 1e-2). It sets __signature__ on the documented
# functions of the building process: build in a process of its own (make docs and the test do).
autodoc_preserve_defaults = True
add_module_names = True
python_display_short_literal_types = True

html_theme = "alabaster"
html_title = f"adaptive_tx {release}"
html_theme_options = {
    "description": "Adaptive gradient methods as composable Optax transformations",
    "fixed_sidebar": True,
    "page_width": "1200px",
    "sidebar_width": "240px",
    "show_relbars": True,
    "code_font_size": "0.8em",
}
html_static_path = ["_static"]
html_css_files = ["custom.css"]
pygments_style = "sphinx"

# --- The demo's figures, generated at build time -------------------------------------------------

DEMO_SCRIPT = ROOT / "examples" / "sparse_feature_demo.py"
DEMO_DIR = DOCS / "_generated" / "demo"
DEMO_FIGURES = (
    "trajectories.png",
    "effective_lr_bars.png",
    "effective_lr_over_time.png",
    "nonstationary.png",
)
DEMO_OUTPUT = "demo_output.txt"  # what the script prints, shown on the page


def _demo_is_current() -> bool:
    """The figures and the printed table exist and are newer than the script and the library."""
    sources = [DEMO_SCRIPT, *(ROOT / "adaptive_tx").rglob("*.py")]
    newest_source = max(path.stat().st_mtime for path in sources)
    outputs = [DEMO_DIR / name for name in (*DEMO_FIGURES, DEMO_OUTPUT)]
    return all(f.exists() and f.stat().st_mtime >= newest_source for f in outputs)


def generate_demo_figures(app=None) -> None:
    """Runs the demo (in a subprocess, as ``make demo`` does) unless its figures are current."""
    if _demo_is_current():
        return
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    command = [sys.executable, str(DEMO_SCRIPT), "--out", str(DEMO_DIR)]
    result = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    (DEMO_DIR / DEMO_OUTPUT).write_text(result.stdout)


def setup(app):
    app.connect("builder-inited", generate_demo_figures)
