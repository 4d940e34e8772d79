"""Stand-in for the get-pip.py bootstrap script that ansible-test downloads at run time.

ansible-test creates a virtual environment without pip for each sanity test and bootstraps
pip into it with a script it downloads from its own CI file host, which CI machines cannot
reach (../shared/ENVIRONMENT.md). ansible-test uses a script it finds in its cache instead,
so `make sanity-venvs` (scripts/built_collection.py) copies this one to ~/.ansible/test/cache/get_pip_<version>.py.

It installs the pip that Python's ensurepip carries, then lets that pip install what
ansible-test asked for (pip at ansible-test's pinned version, from the package index). The
options only get-pip.py knows (--no-setuptools, --no-wheel) are dropped: ensurepip installs
neither setuptools nor wheel.
"""

import ensurepip
import os
import subprocess
import sys

GET_PIP_ONLY_OPTIONS = {"--no-setuptools", "--no-wheel"}

if __name__ == "__main__":
    # ensurepip hides pip's configuration from itself (PIP_CONFIG_FILE=/dev/null in os.environ);
    # the pip run after it must see the machine's package index and CA settings again.
    environment = dict(os.environ)
    ensurepip.bootstrap()
    pip_arguments = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]
    sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *pip_arguments], env=environment))
