# Homebrew formula for quintd. Install from a tap that carries this file:
#   brew install <tap>/quintd
#   brew services start quintd          (as you: a LaunchAgent)
#   sudo brew services start quintd     (as root: a LaunchDaemon, config in /etc/quintd)
#
# The dependency resources were generated for the versions quintd's pyproject.toml
# resolved to when this file was written; regenerate them with
#   brew update-python-resources quintd
class Quintd < Formula
  include Language::Python::Virtualenv

  desc "Monitor for AI coding agents: detects sessions and reports their lifecycle"
  homepage "https://quintai.dev/docs/quintd"
  # PLACEHOLDER: no quintd release tarball is published yet. Before use, point url at the
  # release's source distribution (python3 -m build --sdist) and replace the sha256 below
  # with its `shasum -a 256`.
  url "https://quintai.dev/releases/quintd-0.1.0.tar.gz"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license :cannot_represent # proprietary

  depends_on "python@3.12"

  resource "platformdirs" do
    url "https://files.pythonhosted.org/packages/71/18/0b0d99f5bf164f04a7a9534c3dbdbe4d5fd2b382667685ad40c192c4d3d1/platformdirs-4.14.8.tar.gz"
    sha256 "96893d686e84e9e6f358a9ea41a8de544df66dbf2ba6cda250e7dc73acf85b9b"
  end

  resource "psutil" do
    url "https://files.pythonhosted.org/packages/aa/c6/d1ddf4abb55e93cebc4f2ed8b5d6dbad109ecb8d63748dd2b20ab5e57ebe/psutil-7.2.2.tar.gz"
    sha256 "0746f5f8d406af344fd547f1c8daa5f5c33dbc293bb8d6a16d80b4bb88f59372"
  end

  resource "watchdog" do
    url "https://files.pythonhosted.org/packages/e2/55/087e45c2a3ed8223bc9f30d6b65f051de35513cfc30c989c2b1a14bf862e/watchdog-7.1.0.tar.gz"
    sha256 "d3861e255416f49a1384474cb2efa097de165fb330d4c5432ce6708b509ed922"
  end

  def install
    virtualenv_install_with_resources
  end

  def caveats
    <<~EOS
      quintd sends nothing until it has a deploy token. Put it in
        ~/Library/Application Support/quintd/config.toml   (macOS)
        ~/.config/quintd/config.toml                       (Linux)
      or, for `sudo brew services`, in /etc/quintd/config.toml (mode 0600), as
        [cloud]
        token = "qt_deploy_..."
      then check it and start the service:
        quintd config check
        brew services start quintd
    EOS
  end

  service do
    run [opt_bin/"quintd", "run"]
    keep_alive successful_exit: false
    process_type :background
    working_dir var
    log_path var/"log/quintd.log"
    error_log_path var/"log/quintd.log"
  end

  test do
    assert_match version.to_s, shell_output("#{bin}/quintd --version")
    (testpath/"config.toml").write <<~TOML
      [log]
      level = "info"
    TOML
    system bin/"quintd", "config", "check", "--config", testpath/"config.toml"
    (testpath/"bad.toml").write "[scan]\ninterval = \"1\"\n"
    output = shell_output("#{bin}/quintd config check --config #{testpath}/bad.toml 2>&1", 78)
    assert_match "scan.interval", output
  end
end
