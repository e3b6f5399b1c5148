"""Who may command this device: principals, roles, signed commands, sealed replies.

* :mod:`agent.auth.cose` -- COSE_Sign1 (EdDSA) and COSE_Encrypt (ECDH-ES +
  HKDF-256 over X25519, A256GCM) on top of ``cryptography``; nothing hand-rolled
  but the CBOR structures RFC 9052/9053 define.
* :mod:`agent.auth.envelope` -- the signed command a client sends, built and
  parsed here for both sides.
* :mod:`agent.auth.principals` -- the keys the device trusts, their roles, the
  per-key replay counters and the per-binding device id, in the agent database.
* :mod:`agent.auth.authoriser` -- the one check every command passes before
  its handler runs.
"""
