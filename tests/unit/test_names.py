"""kubeloop.names is the one home of the API version, the label and annotation keys and
the default ports: no other module of the package spells them again, and it imports
nothing, so that every module can import it."""

from __future__ import annotations

import ast
from pathlib import Path

from kubeloop import names

PACKAGE = Path(names.__file__).parent
HOME = Path(names.__file__)
# Keys are recognised by these prefixes even when names.py does not hold them yet.
OWN_PREFIXES = (f"{names.GROUP}/", "app.kubernetes.io/")
PORTS = {
    names.SERVER_PORT,
    names.SERVER_GRPC_PORT,
    names.PROGRESS_PORT,
    names.RENDEZVOUS_PORT,
    names.OPERATOR_METRICS_PORT,
    names.OPERATOR_HEALTH_PORT,
}


def _strings() -> set[str]:
    """names.py's string constants that are keys or the API itself."""
    values = {v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)}
    return {v for v in values if "/" in v or "." in v}


def _duplicates(tree: ast.AST) -> list[tuple[int, object]]:
    strings = _strings()
    found: list[tuple[int, object]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or isinstance(node.value, bool):
            continue
        value = node.value
        key = isinstance(value, str) and (value in strings or value.startswith(OWN_PREFIXES))
        if key or (isinstance(value, int) and value in PORTS):
            found.append((node.lineno, value))
    return found


def test_names_imports_nothing_from_the_package() -> None:
    tree = ast.parse(HOME.read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert all(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in imports)


def test_no_module_repeats_a_name_or_a_default_port() -> None:
    offenders = {
        f"{path.relative_to(PACKAGE)}:{line}": value
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != HOME
        for line, value in _duplicates(ast.parse(path.read_text()))
    }
    assert offenders == {}, "use the constants of kubeloop.names instead"


def test_the_check_sees_a_repeated_name() -> None:
    code = 'X = {"kubeloop.io/track": 1}\nY = "kubeloop.io/v1alpha1"\nZ = f"kubeloop.io/{a}"\n'
    code += "P = 8080\n"
    assert sorted(line for line, _ in _duplicates(ast.parse(code))) == [1, 2, 3, 4]


def test_the_keys_are_the_contract() -> None:
    # Users select on these and dashboards read them: a change here is a breaking one.
    assert names.API_VERSION == f"{names.GROUP}/{names.VERSION}" == "kubeloop.io/v1alpha1"
    assert names.MANAGED_BY == {"app.kubernetes.io/managed-by": "kubeloop"}
    assert names.TRACK_LABEL == "kubeloop.io/track"
    assert names.MODEL_URI_ANNOTATION == "kubeloop.io/model-uri"
    assert (names.SERVER_PORT, names.SERVER_GRPC_PORT) == (8080, 8081)
