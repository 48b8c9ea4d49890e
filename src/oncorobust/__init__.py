"""oncorobust: how fragile are medical-imaging classifiers to adversarial images?

The package holds the logic; the Snakemake workflow under ``workflow/`` only calls it. From
notebooks and scripts, import the stable API: ``from oncorobust import api`` (:mod:`oncorobust.api`;
the other modules are internal and may move between releases).
"""

__version__ = "0.1.0"


def package_version() -> str:
    """The installed distribution's version, else the source tree's ``__version__``.

    Returns:
        A version string such as ``0.1.0``.
    """
    from importlib import metadata

    try:
        return metadata.version("oncorobust")
    except metadata.PackageNotFoundError:
        return __version__
