#!/usr/bin/python3
"""Write the /usr/bin commands of the Debian package from setup.cfg's
console_scripts, so the package has exactly the commands a pip install has.

    python3 debian/wrappers.py setup.cfg BINDIR APPDIR VENDORDIR

Each is what pip would write, plus the private directories first on sys.path:
the application in APPDIR, the libraries Debian lacks in VENDORDIR.
"""

import configparser
import os
import sys

TEMPLATE = '''#!/usr/bin/python3
"""{name}: installed by the Debian package apache-metrics-exporter."""
import sys

sys.path[0:0] = [{appdir!r}, {vendor!r}]
from {module} import {function}

sys.exit({function}())
'''


def main() -> int:
    setup_cfg, bindir, appdir, vendor = sys.argv[1:]
    parser = configparser.ConfigParser()
    parser.read(setup_cfg)
    scripts = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    for line in scripts:
        name, _, target = (part.strip() for part in line.partition("="))
        module, _, function = target.partition(":")
        path = os.path.join(bindir, name)
        with open(path, "w") as out:
            out.write(TEMPLATE.format(name=name, appdir=appdir, vendor=vendor,
                                      module=module, function=function))
        os.chmod(path, 0o755)
    return 0


if __name__ == "__main__":
    sys.exit(main())
