"""verl.models.openvla_oft resolves its public names on first use (PEP 562): every name it
exports must resolve, to the object its submodule defines."""

import importlib

import verl.models.openvla_oft as package


def test_every_exported_name_resolves_to_its_submodules_object():
    assert package.__all__ and set(package.__all__) <= set(dir(package))
    for name in package.__all__:
        module = importlib.import_module(f"{package.__name__}.{package._EXPORTS[name]}")
        assert getattr(package, name) is getattr(module, name), name


def test_an_unknown_name_is_an_attribute_error():
    try:
        package.no_such_name  # noqa: B018
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:
        raise AssertionError("no AttributeError")


def test_the_type_checking_imports_list_the_same_names():
    """The eager imports under `if TYPE_CHECKING:` (for type checkers and IDEs) repeat _EXPORTS."""
    import ast

    tree = ast.parse(open(package.__file__).read())
    block = next(node for node in tree.body if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING")
    imported = {alias.name: node.module.rsplit(".", 1)[-1] for node in block.body for alias in node.names}
    assert imported == package._EXPORTS
