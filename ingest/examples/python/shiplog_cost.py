"""shiplog_cost: report the token usage of an OpenAI or Anthropic API call to shiplog.

Standard library only (copy this file into your project). ``report_usage`` never raises
and is bounded by a short timeout: reporting a cost must never break, or noticeably slow,
the call it measures. It returns True when shiplog acknowledged the event.

    from shiplog_cost import report_usage

    resp = openai_client.chat.completions.create(model="gpt-4o-mini", messages=[...])
    report_usage(resp, "openai", feature="support-summarize")

    msg = anthropic_client.messages.create(model="claude-sonnet-4-5", max_tokens=1024, ...)
    report_usage(msg, "anthropic", feature="chat")

The usage object is sent as the provider returned it (``data.usage``); shiplog derives
the token columns from it and prices the record with its dated price table (see
docs/costs.md). Pass ``cost_usd`` only when you compute the cost yourself: it then wins.

Configuration: ``SHIPLOG_URL`` (default http://127.0.0.1:7070), ``SHIPLOG_TOKEN`` (a token
with the ingest scope), ``SHIPLOG_PROJECT`` (default: the current folder's name),
``SHIPLOG_ENV``, ``SHIPLOG_DEPLOYMENT_ID`` (the deployment serving this process: its
spend and requests are then judged by rollback rules); each can also be given as an
argument.

``report_requests(errors, requests)`` reports the requests the app served in an interval
and how many failed, as a ``check``: rollback rules judge error rates on these counts and
price each served request (``api_cost_per_request``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import urllib.request
import uuid
from typing import Any, Mapping, Optional

__all__ = ["report_usage", "usage_of"]


def _to_dict(obj: Any) -> Optional[dict]:
    """A plain dict of an SDK object (pydantic ``model_dump``), a mapping, or None."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return dict(obj)
    for method in ("model_dump", "to_dict", "dict"):
        f = getattr(obj, method, None)
        if callable(f):
            try:
                d = f()
                if isinstance(d, Mapping):
                    return dict(d)
            except Exception:  # noqa: BLE001 - never raise
                pass
    d = getattr(obj, "__dict__", None)
    return dict(d) if isinstance(d, Mapping) else None


def usage_of(response_or_usage: Any) -> tuple[Optional[dict], Optional[str], Optional[str]]:
    """(usage dict, response id, model) of an SDK response, a response dict, or a usage."""
    d = _to_dict(response_or_usage)
    if d is None:
        return None, None, None
    if "usage" in d:  # a whole response
        usage = d.get("usage")
        if not isinstance(usage, Mapping):
            usage = _to_dict(usage)
        rid = d.get("id")
        model = d.get("model")
        return (dict(usage) if usage else None,
                rid if isinstance(rid, str) else None,
                model if isinstance(model, str) else None)
    return d, None, None


def _strip_none(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _strip_none(x) for k, x in v.items() if x is not None}
    return v


def report_usage(
    response_or_usage: Any,
    provider: str,
    model: Optional[str] = None,
    feature: Optional[str] = None,
    *,
    cost_usd: Optional[float] = None,
    project: Optional[str] = None,
    env: Optional[str] = None,
    deployment_id: Optional[str] = None,
    event_id: Optional[str] = None,
    url: Optional[str] = None,
    token: Optional[str] = None,
    source: str = "app/python",
    timeout: float = 2.0,
) -> bool:
    """Posts one ``api_cost`` event with the call's usage. Never raises."""
    try:
        usage, rid, resp_model = usage_of(response_or_usage)
        model = model or resp_model
        if not model:
            print("shiplog_cost: no model given and none in the response; not reported",
                  file=sys.stderr)
            return False
        data: dict = {"provider": provider, "model": model, "requests": 1}
        if usage:
            data["usage"] = _strip_none(usage)
        if feature:
            data["feature"] = feature
        if cost_usd is not None:
            data["cost_usd"] = float(cost_usd)
        # The provider's response id makes a retried report deduplicate.
        return _send("api_cost", data, event_id or rid, project, env, deployment_id, url,
                     token, source, timeout)
    except Exception as e:  # noqa: BLE001 - reporting must never break the caller
        print(f"shiplog_cost: usage not reported: {e}", file=sys.stderr)
        return False


def _send(kind: str, data: dict, event_id: Optional[str], project: Optional[str],
          env: Optional[str], deployment_id: Optional[str], url: Optional[str],
          token: Optional[str], source: str, timeout: float) -> bool:
    """Posts one event of ``kind`` with ``data``; the arguments left out come from
    SHIPLOG_PROJECT (else the folder's name), SHIPLOG_ENV, SHIPLOG_DEPLOYMENT_ID, SHIPLOG_URL
    and SHIPLOG_TOKEN. True on a 2xx (the event is durable in shiplog's log)."""
    event: dict = {
        "id": event_id or str(uuid.uuid4()),
        "kind": kind,
        "source": source,
        "project": project or os.environ.get("SHIPLOG_PROJECT")
        or os.path.basename(os.getcwd()) or "default",
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "data": data,
    }
    env = env or os.environ.get("SHIPLOG_ENV")
    if env:
        event["env"] = env
    deployment_id = deployment_id or os.environ.get("SHIPLOG_DEPLOYMENT_ID")
    if deployment_id:
        event["deployment_id"] = deployment_id
    base = (url or os.environ.get("SHIPLOG_URL") or "http://127.0.0.1:7070").rstrip("/")
    req = urllib.request.Request(
        base + "/v1/events",
        data=json.dumps(event).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    token = token or os.environ.get("SHIPLOG_TOKEN")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return 200 <= resp.status < 300


def report_requests(
    errors: int,
    requests: int,
    *,
    name: str = "error_rate",
    project: Optional[str] = None,
    env: Optional[str] = None,
    deployment_id: Optional[str] = None,
    event_id: Optional[str] = None,
    url: Optional[str] = None,
    token: Optional[str] = None,
    source: str = "app/python",
    timeout: float = 2.0,
) -> bool:
    """Posts one ``check`` event with the requests the app served in an interval and how
    many failed (``errors``, ``requests``; ``value`` = their ratio). Rollback rules judge
    the counts with a test on counts, and divide the deployment's API spend by
    ``requests`` (the ``api_cost_per_request`` metric). Call it once per interval (say a
    minute) with that interval's counts. Never raises."""
    try:
        if requests < 0 or errors < 0 or errors > requests:
            print(f"shiplog_cost: errors={errors} requests={requests}: need "
                  "0 <= errors <= requests; not reported", file=sys.stderr)
            return False
        data: dict = {"name": name, "errors": int(errors), "requests": int(requests),
                      "unit": "ratio"}
        if requests > 0:
            data["value"] = errors / requests
        return _send("check", data, event_id, project, env, deployment_id, url, token,
                     source, timeout)
    except Exception as e:  # noqa: BLE001 - reporting must never break the caller
        print(f"shiplog_cost: requests not reported: {e}", file=sys.stderr)
        return False


if __name__ == "__main__":
    # Demo without any SDK: the dicts are the usage objects the APIs return.
    chat = {
        "id": "chatcmpl-demo-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "usage": {
            "prompt_tokens": 1532, "completion_tokens": 287, "total_tokens": 1819,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0},
        },
    }
    message = {
        "id": "msg-demo-1",
        "type": "message",
        "model": "claude-sonnet-4-5-20250929",
        "usage": {"input_tokens": 2095, "output_tokens": 503,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1800,
                  "service_tier": "standard"},
    }
    ok1 = report_usage(chat, "openai", feature="demo")
    ok2 = report_usage(message, "anthropic", feature="demo")
    ok3 = report_requests(3, 412)
    print("reported" if ok1 and ok2 and ok3 else "not reported (is shiplog serve running?)")
