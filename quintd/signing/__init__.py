"""Code-signing identity of an executable (or of the script an interpreter runs).

One resolver behind one interface, with a backend per OS:
- macOS: ``codesign -dv --verbose=4`` and ``codesign --verify --strict``;
- Windows: ``Get-AuthenticodeSignature``;
- Linux (no code signing): the dpkg or rpm package that owns the file, else the file's
  SHA-256.

Results are cached by file identity (device, inode, size, mtime), so each file is
examined once. Work runs on a background thread; the scanner waits for it only up to
a small budget per pass, so a 245 MB binary never stalls a scan.
"""

from quintd.signing.backends import default_backend
from quintd.signing.info import SigningInfo
from quintd.signing.resolver import SigningResolver

__all__ = ["SigningInfo", "SigningResolver", "default_backend"]
