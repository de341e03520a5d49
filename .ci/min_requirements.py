"""Print pyproject.toml's runtime dependencies pinned to their declared floors (`>=` becomes `==`).

`make test-min` installs exactly these, so the floors in pyproject.toml are the versions tested.
jaxlib is pinned to jax's floor (jax's wheel accepts any jaxlib up to its own version). A dependency
without a floor is an error: every runtime dependency must declare the version it is tested at.
"""

import pathlib
import re
import sys
import tomllib

project = tomllib.loads(pathlib.Path(sys.argv[1]).read_text())["project"]
for spec in project["dependencies"]:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)", spec.split(";")[0].strip())
    if match is None:
        sys.exit(f"min_requirements: dependency {spec!r} has no '>=' floor; declare one")
    name, floor = match.groups()
    print(f"{name}=={floor}")
    if name == "jax":
        print(f"jaxlib=={floor}")
