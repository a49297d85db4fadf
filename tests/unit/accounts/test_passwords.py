import hashlib

import pytest

from ankihost.accounts import passwords as auth
from ankihost.accounts.env import derived_host_key, load_accounts
from ankihost.config import Settings

# The verified example of spec 01 §2.3 (user u1, password pw2).
EXAMPLE = "$pbkdf2-sha256$i=1000,l=32$c2FsdHNhbHQ$XceQo3ytJ+IKPmy62TRaxWY/ORD+m+4GcWmiygQiUIc"


def test_host_key_is_sha1_of_the_whole_value():
    assert derived_host_key("alice", "secret") == "6985e52cea44a28695d5c440bd42f57e9f50b7b1"
    assert derived_host_key("user", "pass") == "b2619aa1529dfdc4248e6edbf3c1b2a2b014cf6d"
    assert derived_host_key("u1", EXAMPLE) == "cafcc34d920771aedee59f35d49da5e640754b36"


def test_known_phc_hash_verifies():
    parsed = auth.PasswordHash.parse(EXAMPLE)
    assert parsed.verify("pw2")
    assert not parsed.verify("pw3")


def test_sha512_needs_matching_length():
    salt = b"saltsalt"
    digest = hashlib.pbkdf2_hmac("sha512", b"pw", salt, 1000, 64)
    b64 = auth._b64encode
    good = f"$pbkdf2-sha512$i=1000,l=64${b64(salt)}${b64(digest)}"
    assert auth.PasswordHash.parse(good).verify("pw")
    with pytest.raises(auth.HashFormatError):
        auth.PasswordHash.parse(f"$pbkdf2-sha512$i=1000${b64(salt)}${b64(digest)}")


def test_parameters_may_be_left_out():
    salt, digest = b"0123456789abcdef", hashlib.pbkdf2_hmac("sha256", b"pw", b"0123456789abcdef", 600_000, 32)
    parsed = auth.PasswordHash.parse(f"$pbkdf2-sha256${auth._b64encode(salt)}${auth._b64encode(digest)}")
    assert parsed.rounds == 600_000 and parsed.verify("pw")


@pytest.mark.parametrize(
    "bad",
    [
        "plaintext",
        "$pbkdf2$i=1000,l=20$c2FsdHNhbHQ$XceQo3ytJ+IKPmy62TRa",  # sha1 is not accepted upstream
        "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$XceQo3ytJ+IKPmy62TRaxWY",
        "$pbkdf2-sha256$i=1000,l=32,x=1$c2FsdHNhbHQ$XceQo3ytJ+IKPmy62TRaxWY/ORD+m+4GcWmiygQiUIc",
        "$pbkdf2-sha256$v=1$i=1000$c2FsdHNhbHQ$XceQo3ytJ+IKPmy62TRaxWY/ORD+m+4GcWmiygQiUIc",
        "$pbkdf2-sha256$i=1000,l=16$c2FsdHNhbHQ$XceQo3ytJ+IKPmy62TRaxWY/ORD+m+4GcWmiygQiUIc",
        "$pbkdf2-sha256$i=1000,l=32$c2F$XceQo3ytJ+IKPmy62TRaxWY/ORD+m+4GcWmiygQiUIc",
    ],
)
def test_unsupported_or_malformed_hashes_are_refused(bad):
    with pytest.raises(auth.HashFormatError):
        auth.PasswordHash.parse(bad)


def test_hash_password_round_trips():
    phc = auth.hash_password("correct horse", rounds=1000)
    assert phc.startswith("$pbkdf2-sha256$i=1000,l=32$")
    parsed = auth.PasswordHash.parse(phc)
    assert parsed.verify("correct horse") and not parsed.verify("correct horse ")


def test_users_check_plain_and_hashed_passwords():
    plain = load_accounts(Settings.from_env({"HOME": "/h", "SYNC_USER1": "a:p:w"}))[0]
    assert plain.check_password("p:w") and not plain.check_password("p")
    hashed = load_accounts(Settings.from_env({"HOME": "/h", "SYNC_USER1": f"u1:{EXAMPLE}",
                                           "PASSWORDS_HASHED": ""}))[0]
    assert hashed.check_password("pw2") and hashed.host_key == "cafcc34d920771aedee59f35d49da5e640754b36"
    assert "pw2" not in repr(hashed) and EXAMPLE not in repr(hashed)
