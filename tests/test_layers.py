"""Imports run one way: each module of the package imports only from the layers below its own.

The layers are the ones named in the docstring of ``vae_augment/__init__.py``. Every import
statement is read from the source (also those inside functions), relative imports resolved, and
each edge between two modules of the package checked against the layer table; a new module must be
given a layer here. Inside a function, a module may import only an optional extra (gradio,
albumentations, diffusers), so that the package imports without them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vae_augment"

# lowest first; a module may import modules of strictly lower layers only
LAYERS = [
    ["pixels", "latent", "losses", "seeding"],
    ["atomic"],  # atomic writes
    ["checkpoint"],  # the folder format: file names, reading with validation
    ["card"],  # the model card
    ["hub"],  # Hub transfers
    ["models.base", "models.conv_nets"],
    ["models.conv_checkpoint"],  # the conv VAE's persistence (a mixin of VAE)
    ["models.conv", "models.diffusers_vae"],
    ["models"],
    ["loader"],  # the kind table, load_vae
    ["policy"],
    ["augment"],
    ["transform_base"],
    ["transforms", "albu"],
    ["loaders"],
    ["data"],
    ["evaluation", "run_folder", "devices"],  # what training measures, the folder it writes, where it runs
    ["training", "generate", "preview", "pseudo"],
    ["prior"],  # fit_prior, on training's learning-rate schedule
    ["app.support"],
    ["app.handlers"],  # the app's requests, without the layout
    ["app"],
    ["cli"],
    [""],  # the package's __init__: the public API, re-exported from everything
]
LAYER = {f"vae_augment.{name}".rstrip("."): index for index, names in enumerate(LAYERS) for name in names}
# imports allowed inside a function body: optional extras, with the install hint in their error
LAZY_ALLOWED = {
    ("vae_augment.cli", "vae_augment.app"),  # gradio: `vae-augment demo` only
    ("vae_augment", "vae_augment.albu"),  # albumentations: `vae_augment.AlbuVAEAugment` only
    ("vae_augment.models.diffusers_vae", "diffusers"),
}
OPTIONAL_EXTRAS = {"gradio", "albumentations", "diffusers", "pydantic"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, name: str | None = None) -> list[tuple[str, bool, int]]:
    """(imported module, inside a function?, line) for every import in ``path`` (the module ``name``),
    relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module
                if target == "vae_augment" or (child.level and not child.module):  # `from . import x`: each x is a module
                    for alias in child.names:
                        candidate = f"{target}.{alias.name}"
                        found.append((candidate if candidate in LAYER else target, in_function, child.lineno))
                else:
                    found.append((target, in_function, child.lineno))
            visit(child, nested)

    visit(tree, False)
    return found


def package_target(target: str) -> str | None:
    """The module of the layer table that ``target`` (a module path) belongs to, or None outside the package."""
    while target and target not in LAYER:
        if not target.startswith("vae_augment"):
            return None
        target = target.rpartition(".")[0]
    return target or None


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    missing = sorted(module_name(p) for p in SOURCES if module_name(p) not in LAYER)
    assert not missing, f"give these modules a layer in tests/test_layers.py: {missing}"


@pytest.mark.parametrize("path", SOURCES, ids=[module_name(p) for p in SOURCES])
def test_imports_point_down(path):
    source = module_name(path)
    upward = []
    for target, _, line in imports(path):
        module = package_target(target)
        if module is None or module == source or (source == "vae_augment" and module != source):
            continue  # outside the package; itself; the package's __init__ re-exports everything
        if LAYER[module] >= LAYER[source]:
            upward.append(f"line {line}: {source} (layer {LAYER[source]}) imports {module} (layer {LAYER[module]})")
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("path", SOURCES, ids=[module_name(p) for p in SOURCES])
def test_no_imports_inside_functions_except_optional_extras(path):
    source = module_name(path)
    lazy = [(target, line) for target, in_function, line in imports(path) if in_function]
    wrong = [f"line {line}: {target}" for target, line in lazy
             if (source, package_target(target) or target.split(".")[0]) not in LAZY_ALLOWED]
    assert not wrong, f"{source} imports inside a function (allowed only for the optional extras {sorted(OPTIONAL_EXTRAS)}): {wrong}"


def test_the_checker_sees_an_upward_import(tmp_path):
    """The checker itself: a low module importing a higher one is reported (a test that could fail)."""
    bad = PACKAGE / "pixels.py"
    text = bad.read_text(encoding="utf-8") + "\n\ndef _late():\n    from .loader import load_vae\n"
    copy = tmp_path / "pixels.py"
    copy.write_text(text, encoding="utf-8")
    found = imports(copy, "vae_augment.pixels")
    assert ("vae_augment.loader", True, text.count("\n")) in found
    assert package_target("vae_augment.loader") == "vae_augment.loader" and LAYER["vae_augment.loader"] > LAYER["vae_augment.pixels"]


def test_only_the_diffusers_wrapper_imports_diffusers():
    users = sorted(module_name(p) for p in SOURCES if any(t.split(".")[0] == "diffusers" for t, _, _ in imports(p)))
    assert users == ["vae_augment.models.diffusers_vae"]


def test_only_the_loader_asks_which_class_a_model_is():
    """No isinstance on model classes outside the loader (loader.py) and the models themselves."""
    offenders = []
    for path in SOURCES:
        name = module_name(path)
        if name.startswith("vae_augment.models") or name == "vae_augment.loader":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
                classes = ast.unparse(node.args[1])
                if any(cls in classes.replace("(", " ").replace(",", " ").split() for cls in ("VAE", "DiffusersVAE")):
                    offenders.append(f"{name}:{node.lineno}: isinstance(..., {classes})")
            if isinstance(node, ast.Compare) and ".image_size is None" in ast.unparse(node):
                offenders.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, offenders
