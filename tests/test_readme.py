"""The program shown in README.md loads and does what it says."""

import re
from pathlib import Path

import dpkt

from dataplane import XdpAction, load_program

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_program(tmp_path):
    code = re.search(r"```python\n(from dataplane import XDP_DROP.*?)```", README.read_text(),
                     re.S).group(1)
    path = tmp_path / "readme_prog.py"
    path.write_text(code)
    prog = load_program(str(path))
    ip = dpkt.ip.IP(p=17, data=dpkt.udp.UDP(sport=1, dport=2, data=b"x" * 40))
    whole = bytes(dpkt.ethernet.Ethernet(type=0x0800, data=ip))
    ip.mf = 1
    fragment = bytes(dpkt.ethernet.Ethernet(type=0x0800, data=ip))
    assert prog.test_run(whole)[0] == XdpAction.XDP_PASS
    assert prog.test_run(fragment)[0] == XdpAction.XDP_DROP
