"""Package layout: `src/autellix` is the shared package; `services/*` ship as `autellix.services.*`.

Metadata lives in pyproject.toml; this file only maps the services directory into the package so
`pip install .` (and editable installs) ship the service entry points without a checkout.
"""

from setuptools import find_packages, setup

services = ["autellix.services"] + [
    f"autellix.services.{name}" for name in find_packages("services")
]
setup(
    packages=[*find_packages("src"), *services, "autellix.migrations"],
    package_dir={"": "src", "autellix.services": "services", "autellix.migrations": "migrations"},
)
