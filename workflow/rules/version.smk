# Stops the run, before any rule file imports the latentebsd package, when the installed
# package is missing or of another version than this revision of the workflow
# (LATENTEBSD_VERSION, set in the Snakefile). Neither `snakedeploy deploy-workflow` nor a
# `module` installs the package: the user does (README, "Deployment").

import os

from snakemake.exceptions import WorkflowError


def check_latentebsd_version(wanted, rules_dir):
    """Raise a WorkflowError naming both versions and the command that installs the
    right one when ``latentebsd`` is not importable or not version ``wanted``;
    ``rules_dir``: the directory (or URL) of this file."""
    # a local clone: the repository root holds the package (pyproject.toml)
    roots = [os.path.dirname(rules_dir), os.path.dirname(os.path.dirname(rules_dir))]
    clone = next(
        (r for r in roots if os.path.exists(os.path.join(r, "pyproject.toml"))), None
    )
    source = clone or os.path.dirname(rules_dir)
    how = (
        f"pip install {clone}"
        if clone
        else f'pip install "latentebsd @ git+<this workflow\'s repository>@v{wanted}"'
    )
    try:
        import latentebsd
    except ImportError as e:
        raise WorkflowError(
            f"the latentebsd workflow {wanted} ({source}) needs the latentebsd Python "
            f"package {wanted}, which is not installed in this environment ({e}). "
            f"Install it where Snakemake runs: {how}"
        )
    installed = getattr(latentebsd, "__version__", "unknown")
    if installed != wanted:
        raise WorkflowError(
            f"the latentebsd workflow is version {wanted} ({source}), but the installed "
            f"latentebsd package is version {installed} "
            f"({os.path.dirname(latentebsd.__file__)}). Install the package of the "
            f"workflow's release: {how}"
        )


check_latentebsd_version(LATENTEBSD_VERSION, str(workflow.current_basedir))
