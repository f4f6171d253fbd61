"""Code-signing identity of an executable (or of the script an interpreter runs).

One resolver behind one interface, with a backend per OS:
- macOS: ``codesign -dv --verbose=4`` and ``codesign --verify --strict``;
- Windows: ``Get-AuthenticodeSignature``;
- Linux (no code signing): the package that installed the file (dpkg, rpm, npm, pip,
  Homebrew, snap), checked against what the machine recorded of it, else the file's
  SHA-256 (``linux.py``); the file is opened safely (``examine.py``).

Results are cached by file identity (device, inode, size, mtime, ctime), so each file is
examined once. Work runs on a small pool of background threads; the scanner waits for it
only up to a small budget per pass, so a 245 MB binary never stalls a scan, and one slow
file never delays another's identity.
"""

from quintd.signing.backends import default_backend
from quintd.signing.examine import Target
from quintd.signing.info import SigningInfo
from quintd.signing.resolver import SigningResolver

__all__ = ["SigningInfo", "SigningResolver", "Target", "default_backend"]
