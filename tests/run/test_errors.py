"""evol.errors: the one error a command surfaces from a group of failures."""

from __future__ import annotations

from evol.errors import AuthenticationFailed, EvolError
from evol.errors import most_telling as _most_telling


def test_the_users_error_is_surfaced_from_behind_a_nested_group() -> None:
    user_facing = AuthenticationFailed("bad key")
    group = BaseExceptionGroup(
        "two", [ExceptionGroup("in", [RuntimeError("a"), KeyError("b")]), user_facing]
    )
    assert _most_telling(group) is user_facing
    first = RuntimeError("first")
    nested = BaseExceptionGroup("two", [ExceptionGroup("in", [first]), KeyError("b")])
    assert _most_telling(nested) is first


def test_the_error_surfaced_from_a_group_is_the_users_one() -> None:
    user_facing = AuthenticationFailed("bad key")
    group = BaseExceptionGroup("two", [RuntimeError("a"), ExceptionGroup("in", [user_facing])])
    assert _most_telling(group) is user_facing
    plain_error = RuntimeError("first")
    assert _most_telling(BaseExceptionGroup("two", [plain_error, KeyError("b")])) is plain_error
    assert isinstance(user_facing, EvolError)
