"""Test doubles shipped with codeloop: fake model servers that the real SDKs talk to."""
