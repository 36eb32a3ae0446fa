"""fedzo.zo is the pure core: importing it must not pull in flwr or transformers."""

import subprocess
import sys


def test_zo_imports_neither_flwr_nor_transformers() -> None:
    code = (
        "import sys, fedzo.zo, fedzo.zo.first_order\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'flwr', 'transformers', 'peft', 'ray'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"fedzo.zo imported: {out.stdout.strip()}"
