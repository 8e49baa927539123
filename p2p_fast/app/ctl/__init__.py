"""``p2p-ctl``: talk to a running node's HTTP API — status, peers, submit, watch, cancel, tasks, ledger, gossip.

Which node: ``--api URL``, else ``--data-dir DIR`` (reads the node's ``node.json``), else ``$P2P_API``, else
http://127.0.0.1:8080. A node with an API token (``http.token_file``) needs it here too: ``--token-file FILE``, else
``$P2P_API_TOKEN``. Exit codes: 0 success; 1 a task failed or the node answered an error; 2 bad usage or the node
cannot be reached.

    p2p-ctl status
    p2p-ctl submit compute test_payload            # waits and prints the result
    p2p-ctl submit echo hello --count 1000         # a batch, with a progress bar
    p2p-ctl submit sleep 5 --no-wait               # prints the id only
    p2p-ctl submit echo @photo.jpg -o copy.jpg     # payload from a file (binary-safe), raw result to a file
    cat words.txt | p2p-ctl submit wordcount -     # payload from stdin
    p2p-ctl cancel ID [ID ...]
    p2p-ctl capabilities                           # who offers what
    p2p-ctl gossip "hello everyone"                # broadcast (or - / @file); without a text: the recent ones
    p2p-ctl watch ID [ID ...]
    p2p-ctl tasks --state failed
    p2p-ctl ledger --verify

The package: :mod:`.client` (which node, the token, HTTP calls), :mod:`.watch` (waiting for tasks),
:mod:`.commands` (one function per command), :mod:`.cli` (arguments and ``main``).
"""

from p2p_fast.app.ctl.cli import main, parser
from p2p_fast.app.ctl.client import CtlError

__all__ = ["CtlError", "main", "parser"]
