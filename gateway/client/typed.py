"""Typed fields of hotline alerts and requests: what the alert is about (a located victim,
a suspect's movement...), where and when, the persons and documents concerned; and of
a request, its legal type, the authorities, the legal basis, languages and translations.

All of it lives inside the sealed payload (gateway.client.payload): gateways never see
it. The fields are optional, so a payload of an earlier client still opens, but each
field that is present is checked, here and by the recipient's client.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.errors import ClientError

#: What a hotline alert is about.
ALERT_TYPES = ("located_victim", "victim_to_verify", "missing_person", "suspect_movement",
               "border_crossing", "wanted_person_located", "travelling_sex_offender",
               "victim_handover")
#: The legal type of a request (mutual legal assistance, extradition, transfers).
REQUEST_TYPES = ("collect_evidence", "serve_documents", "summon_witness",
                 "identification_records", "search", "seizure_freezing",
                 "provisional_arrest_extradition", "transfer_proceedings",
                 "transfer_sentenced_persons", "other")
PERSON_ROLES = ("victim", "suspect", "witness", "missing", "offender", "other")
#: Age bands; the ones under 18 are children's.
AGE_BANDS = ("0-5", "6-11", "12-15", "16-17", "18-24", "25-39", "40-59", "60+", "unknown")
CHILD_BANDS = frozenset({"0-5", "6-11", "12-15", "16-17"})
DOCUMENT_TYPES = ("passport", "id_card", "travel_document", "birth_certificate",
                  "residence_permit", "other")
MAX_PERSONS = 50
MAX_DOCUMENTS = 50
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?(Z|[+-]\d{2}:\d{2})")


class PayloadError(ClientError):
    """A payload (or a typed field of it) that is not what its kind says."""

    code = "bad_payload"


def _short(value: Any, name: str, limit: int = 500) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise PayloadError(f"{name} must be non-empty text of at most {limit} characters")


def _one_of(value: Any, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise PayloadError(f"{name} must be one of {', '.join(choices)}")


def _document(doc: Any, where: str) -> None:
    if not isinstance(doc, dict) or set(doc) - {"type", "number", "issuer"}:
        raise PayloadError(f"{where}: a document has type, number and issuer only")
    _one_of(doc.get("type"), f"{where} type", DOCUMENT_TYPES)
    for key in ("number", "issuer"):
        if key in doc:
            _short(doc[key], f"{where} {key}", 100)


def _documents(items: Any, where: str) -> None:
    if not isinstance(items, list) or len(items) > MAX_DOCUMENTS:
        raise PayloadError(f"{where} must be a list of at most {MAX_DOCUMENTS}")
    for i, doc in enumerate(items):
        _document(doc, f"{where}[{i}]")


_PERSON_KEYS = frozenset({"role", "name", "age_band", "child", "nationality", "sex",
                          "documents"})


def _person(person: Any, where: str) -> None:
    if not isinstance(person, dict) or set(person) - _PERSON_KEYS:
        raise PayloadError(f"{where}: a person has {', '.join(sorted(_PERSON_KEYS))} only")
    _one_of(person.get("role"), f"{where} role", PERSON_ROLES)
    band = person.get("age_band", "unknown")
    _one_of(band, f"{where} age_band", AGE_BANDS)
    child = person.get("child")
    if not isinstance(child, bool):
        raise PayloadError(f"{where} child must be true or false")
    if band != "unknown" and child != (band in CHILD_BANDS):
        raise PayloadError(f"{where}: age band {band} and child={str(child).lower()} disagree")
    for key in ("name", "nationality", "sex"):
        if key in person:
            _short(person[key], f"{where} {key}", 200)
    if "documents" in person:
        _documents(person["documents"], f"{where} documents")


def check_alert(doc: dict[str, Any]) -> None:
    """The typed fields of a hotline payload, if any."""
    if "alert_type" in doc:
        _one_of(doc["alert_type"], "alert_type", ALERT_TYPES)
    for key in ("place", "border_gate"):
        if key in doc:
            _short(doc[key], key)
    if "time" in doc and (not isinstance(doc["time"], str)
                          or not _TIME.fullmatch(doc["time"])):
        raise PayloadError("time must be ISO 8601 with its offset, e.g. 2026-12-06T14:30+07:00")
    if "persons" in doc:
        persons = doc["persons"]
        if not isinstance(persons, list) or len(persons) > MAX_PERSONS:
            raise PayloadError(f"persons must be a list of at most {MAX_PERSONS}")
        for i, person in enumerate(persons):
            _person(person, f"persons[{i}]")
    if "documents" in doc:
        _documents(doc["documents"], "documents")


def check_handover(doc: dict[str, Any]) -> None:
    """A handover receipt: when (required) and where the persons were received, and who."""
    if not isinstance(doc.get("received_at"), str) or not _TIME.fullmatch(doc["received_at"]):
        raise PayloadError("received_at must be ISO 8601 with its offset, e.g. "
                           "2026-12-06T14:30+07:00")
    check_alert({k: v for k, v in doc.items() if k in ("place", "persons")})


def check_request(doc: dict[str, Any], attachments: int) -> None:
    """The typed fields of a case payload, if any (``attachments``: how many it has)."""
    if "request_type" in doc:
        _one_of(doc["request_type"], "request_type", REQUEST_TYPES)
    for key in ("requesting_authority", "executing_authority", "treaty"):
        if key in doc:
            _short(doc[key], key)
    if "languages" in doc:
        languages = doc["languages"]
        if not isinstance(languages, list) or not 0 < len(languages) <= 10 or not all(
                isinstance(code, str) and _LANGUAGE.fullmatch(code) for code in languages):
            raise PayloadError("languages must be 1 to 10 language tags such as vi, lo, km")
    if "translations" in doc:
        items = doc["translations"]
        if not isinstance(items, list) or len(items) > attachments:
            raise PayloadError("translations must name attachments of the request")
        for i, item in enumerate(items):
            if not isinstance(item, dict) or set(item) != {"attachment", "language"}:
                raise PayloadError(f"translations[{i}] has attachment and language")
            index = item["attachment"]
            if type(index) is not int or not 0 <= index < attachments:
                raise PayloadError(f"translations[{i}] attachment must be the index of one "
                                 "of the request's attachments")
            if not isinstance(item["language"], str) or not _LANGUAGE.fullmatch(
                    item["language"]):
                raise PayloadError(f"translations[{i}] language must be a language tag")


def parse_pairs(text: str, what: str) -> dict[str, str]:
    """``key=value,key=value`` as the command line gives a person or a document."""
    pairs: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or key in pairs:
            raise PayloadError(f"{what} {text!r}: write key=value pairs separated by commas")
        pairs[key] = value
    return pairs


_YES = {"yes": True, "true": True, "no": False, "false": False}


def person_from(text: str) -> dict[str, Any]:
    """A person from ``role=victim,age=12-15,child=yes,nationality=VN,name=...``; the
    child flag follows from the age band when it is not given."""
    pairs = parse_pairs(text, "--person")
    unknown = set(pairs) - {"role", "name", "age", "child", "nationality", "sex"}
    if unknown:
        raise PayloadError(f"--person: unknown key(s) {', '.join(sorted(unknown))}")
    person: dict[str, Any] = {"role": pairs.get("role", "")}
    band = pairs.get("age", "unknown")
    person["age_band"] = band
    if "child" in pairs:
        if pairs["child"].lower() not in _YES:
            raise PayloadError("--person child must be yes or no")
        person["child"] = _YES[pairs["child"].lower()]
    else:
        person["child"] = band in CHILD_BANDS
    for key in ("name", "nationality", "sex"):
        if key in pairs:
            person[key] = pairs[key]
    _person(person, "--person")
    return person


def document_from(text: str) -> dict[str, Any]:
    """A document from ``type=passport,number=...,issuer=VN``."""
    doc: dict[str, Any] = dict(parse_pairs(text, "--document"))
    _document(doc, "--document")
    return doc
