"""A Hugging Face Hub-compatible HTTP server for tests (stdlib only), bound to 127.0.0.1.

It implements the routes the *unmodified* ``huggingface_hub`` client uses to create repos,
upload (preupload, LFS batch + PUT + verify, NDJSON commit), tag, list refs, read repo
info/trees and download (``resolve`` with ``X-Repo-Commit``, ``ETag``, ``X-Linked-*``, Range).
Tests set ``HF_HUB_DISABLE_XET=1`` so the client uses the LFS protocol.

Test helpers: :meth:`HubServer.fail_next` (fault injection), :meth:`HubServer.require_token`,
:meth:`HubServer.corrupt` / :meth:`HubServer.seed_repo` (storage), byte counters
(:attr:`HubServer.bytes_served`, :meth:`HubServer.bytes_for`).
"""

from hubserver.server import Fault, HubServer, RequestRecord

__all__ = ["Fault", "HubServer", "RequestRecord"]
