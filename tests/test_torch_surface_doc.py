"""docs/torch-surface.md is generated from the code and current (issue 10)."""

import runpy
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "docs" / "generate_torch_surface.py"


def test_torch_surface_table_is_current():
    module = runpy.run_path(str(SCRIPT))
    assert module["main"](["--check"]) == 0, "run: python docs/generate_torch_surface.py"


def test_torch_surface_table_lists_the_issue_names():
    text = (SCRIPT.parent / "torch-surface.md").read_text()
    for name in ("`torch.float64`", "`torch.manual_seed`", "`torch.nn.functional.gelu`", "`Tensor.cpu` | host read",
                 "`Tensor.chunk` | device side", "`torch.cuda.mem_get_info`", "`torch.einsum`"):
        assert name in text, name
