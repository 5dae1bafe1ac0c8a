"""The command works without the optional extras: a group whose dependencies are missing says
what to install instead of breaking every other command (README's install is `.[local]` only)."""

import subprocess
import sys

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'datatrove':
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
sys.argv = ['notebook-agent'] + sys.argv[1:]
from notebook_agent.cli import main
main()
"""


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK, *args], capture_output=True, text=True, timeout=120)


def test_missing_data_extra_leaves_the_rest_working():
    r = run("--help")
    assert r.returncode == 0 and "run" in r.stdout and "needs the data extra" in r.stdout
    r = run("data", "build", "x.yaml")
    assert r.returncode == 2 and "pip install 'notebook-agent[data]'" in r.stderr and "Traceback" not in r.stderr
    r = run("models", "list")
    assert r.returncode == 0, r.stderr
