import types

import beit_client


def test_all_public_names_are_exported_and_sorted() -> None:
    public = sorted(
        name
        for name, value in vars(beit_client).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    )
    assert beit_client.__all__ == public
