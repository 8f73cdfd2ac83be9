import shutil

import pytest


def pytest_collection_modifyitems(config, items):
    if shutil.which("iverilog") and shutil.which("vvp"):
        return
    skip = pytest.mark.skip(reason="Icarus Verilog (iverilog, vvp) is not installed; CI installs it "
                                   "(dev.sh: apt-get install iverilog)")
    for item in items:
        if "rtl" in item.keywords:
            item.add_marker(skip)
