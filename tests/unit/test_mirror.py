"""``tests/unit`` mirrors the package: every module with logic has its own unit-test file.

``inference_club/<path>/<name>.py`` is tested in ``tests/unit/<path>/test_<name>.py``. A
module without one must be named in ``WITHOUT_UNIT_TESTS`` with the reason, so a new
module cannot arrive untested by accident and a reader knows where each one is tested.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "inference_club"
UNIT = ROOT / "tests" / "unit"

# Modules that hold no logic of their own, or whose tests live elsewhere for a reason.
WITHOUT_UNIT_TESTS: dict[str, str] = {
    "agent/__main__": "two lines that call the agent CLI (tested in tests/unit/agent/test_cli.py)",
    "cluster/events": "wiring only: builds the broadcast, revocation and signal fan-outs, each tested",
    "domain/http_headers": "declarations: sets of header names",
    "domain/service_types": "declarations: the service-type enum",
    "store/tables": "declarations: tables; tests/unit/store/test_migrate.py checks them against migrations",
    "tunnel/traffic": "declarations: a dataclass of counters and the list of them",
}

# Unit-test files that are not a module's mirror, and the module each one tests.
EXTRA_TEST_FILES: dict[str, str] = {
    "agent/adapters/test_registry.py": "agent/adapters/__init__",
    "services/test_response_head.py": "services/transports/base",
    "services/test_revision_poller.py": "services/jobs",
    "tunnel/test_progress_frame.py": "tunnel/protocol",
}

# Folders of the package whose modules are test tooling or schema history, not product code.
FOLDERS_WITHOUT_UNIT_TESTS: dict[str, str] = {
    "testing": "test tooling (fake engines, stubs, process helpers): every suite exercises it",
    "store/migrations": "schema history: applied to an empty database by the store's migrate tests",
}


def package_modules() -> list[str]:
    """Module paths relative to the package, without ``.py`` (``agent/cli``)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).with_suffix("").as_posix()
        if path.name == "__init__.py" or any(
            relative.startswith(folder + "/") for folder in FOLDERS_WITHOUT_UNIT_TESTS
        ):
            continue
        found.append(relative)
    return found


def mirror_of(module: str) -> Path:
    folder, _, name = module.rpartition("/")
    return UNIT / folder / f"test_{name}.py"


def test_every_module_with_logic_has_its_unit_tests() -> None:
    missing = [
        f"{module} -> {mirror_of(module).relative_to(ROOT)}"
        for module in package_modules()
        if module not in WITHOUT_UNIT_TESTS and not mirror_of(module).exists()
    ]
    assert not missing, (
        "modules without unit tests (add them, or name the module with a reason):\n" + "\n".join(missing)
    )


def test_the_exemptions_name_real_modules_without_tests() -> None:
    modules = set(package_modules())
    stale = [m for m in WITHOUT_UNIT_TESTS if m not in modules or mirror_of(m).exists()]
    assert not stale, f"exemptions for modules that are gone or now have unit tests: {stale}"


def test_every_unit_test_file_mirrors_a_module() -> None:
    modules = set(package_modules())
    # Tests of the package as a whole (imports, docs, errors tree) sit at the top of tests/unit.
    whole_package = {"test_import_cycles", "test_agent_imports", "test_docs", "test_mirror"}
    strays = []
    for path in sorted(UNIT.rglob("test_*.py")):
        relative = path.relative_to(UNIT)
        if relative.parts[0] == "testing" or (len(relative.parts) == 1 and path.stem in whole_package):
            continue
        if relative.as_posix() in EXTRA_TEST_FILES:
            tested = EXTRA_TEST_FILES[relative.as_posix()]
            if not (PACKAGE / f"{tested}.py").exists():
                strays.append(f"{relative.as_posix()} (names {tested}, which is gone)")
            continue
        module = (relative.parent / path.stem.removeprefix("test_")).as_posix()
        if module not in modules:
            strays.append(relative.as_posix())
    assert not strays, f"unit-test files that mirror no module (move or rename them): {strays}"
