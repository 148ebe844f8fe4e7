"""ext_authz conformance client on gRPC C-core (Debian python3-grpcio), the stack family Envoy's
Google gRPC client is built on. No generated stubs: the CheckRequest is hand-encoded protobuf and
the CheckResponse is decoded field by field, so this checks the wire format rather than our own
proto-loader objects.

Usage: /usr/bin/python3 conformance_client.py <port> <valid-token>
Prints one JSON object with what each scenario received; the mocha test asserts on it.
"""
import json
import sys

try:
    import grpc
except ImportError:
    print(json.dumps({"error": "python3-grpcio is not installed (apt-get install python3-grpcio)"}))
    sys.exit(3)


# ---- protobuf wire encoding (proto3: varint=0, length-delimited=2) ----

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, payload):
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return varint((num << 3) | 2) + varint(len(payload)) + payload


def varint_field(num, value):
    return varint(num << 3) + varint(value)


def map_entry(num, key, value):
    return field(num, field(1, key) + field(2, value))


def check_request(headers, context_extensions=None, raw_headers=False):
    """CheckRequest{attributes: AttributeContext{request{http{...}}, context_extensions}}."""
    path = headers.get(":path", "/")
    http = field(1, "4711") + field(2, headers.get(":method", "GET"))
    if raw_headers:
        # header_map (13): HeaderMap{repeated HeaderValue headers = 1 {key = 1, raw_value = 3}}
        hm = b"".join(field(1, field(1, k) + field(3, v.encode("latin-1"))) for k, v in headers.items())
        http += field(13, hm)
    else:
        http += b"".join(map_entry(3, k, v) for k, v in headers.items())
    http += field(4, path) + field(5, headers.get(":authority", "app.local")) + field(6, "http")
    http += varint_field(9, 0) + field(10, "HTTP/2")
    request = field(2, http)  # Request.http = 2
    attrs = field(4, request)  # AttributeContext.request = 4
    for k, v in (context_extensions or {}).items():
        attrs += map_entry(10, k, v)  # AttributeContext.context_extensions = 10
    return field(1, attrs)  # CheckRequest.attributes = 1


# ---- protobuf wire decoding ----

def parse(buf):
    """Returns {field_number: [values]} with bytes for length-delimited and ints for varints."""
    fields = {}
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, i = read_varint(buf, i)
        elif wt == 2:
            ln, i = read_varint(buf, i)
            val, i = buf[i:i + ln], i + ln
        elif wt == 5:
            val, i = buf[i:i + 4], i + 4
        elif wt == 1:
            val, i = buf[i:i + 8], i + 8
        else:
            raise ValueError("unsupported wire type %d" % wt)
        fields.setdefault(num, []).append(val)
    return fields


def read_varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def first(fields, num, default=None):
    vals = fields.get(num)
    return vals[0] if vals else default


def header_options(values):
    out = []
    for raw in values:
        opt = parse(raw)
        hv = parse(first(opt, 1, b""))
        out.append({
            "key": first(hv, 1, b"").decode(),
            "value": first(hv, 2, b"").decode(),
            "append_action": first(opt, 3, 0),
        })
    return out


def check_response(buf):
    f = parse(buf)
    status = parse(first(f, 1, b""))
    result = {"code": first(status, 1, 0), "message": first(status, 2, b"").decode()}
    if 2 in f:
        denied = parse(first(f, 2))
        result["denied"] = {
            "http_status": first(parse(first(denied, 1, b"")), 1, 0),
            "headers": header_options(denied.get(2, [])),
            "body": first(denied, 3, b"").decode(),
        }
    if 3 in f:
        ok = parse(first(f, 3))
        result["ok"] = {
            "headers": header_options(ok.get(2, [])),
            "headers_to_remove": [v.decode() for v in ok.get(5, [])],
        }
    return result


def main():
    port, token = sys.argv[1], sys.argv[2]
    identity = lambda b: b
    out = {}
    with grpc.insecure_channel("127.0.0.1:%s" % port) as channel:
        call = channel.unary_unary("/envoy.service.auth.v3.Authorization/Check",
                                   request_serializer=identity, response_deserializer=identity)
        base = {":authority": "app.local", ":method": "GET", ":path": "/api/items?x=1", ":scheme": "http",
                "x-request-id": "0f8fad5b-d9cb-469f-a165-70867728950e"}

        out["no_token"] = check_response(call(check_request(base), timeout=5))
        with_token = dict(base, authorization="Bearer " + token)
        out["allow_inject"] = check_response(call(check_request(with_token, {"downstream_api": "graph"}), timeout=5))
        out["allow_raw_headers"] = check_response(call(check_request(dict(base, Authorization="Bearer " + token), raw_headers=True), timeout=5))
        out["insufficient_scope"] = check_response(
            call(check_request(with_token, {"required_scopes": "Mail.Send"}), timeout=5))

        legacy = channel.unary_unary("/envoy.service.auth.v2.Authorization/Check",
                                     request_serializer=identity, response_deserializer=identity)
        try:
            legacy(check_request(base), timeout=5)
            out["v2"] = "OK"
        except grpc.RpcError as e:
            out["v2"] = e.code().name

        health = channel.unary_unary("/grpc.health.v1.Health/Check",
                                     request_serializer=identity, response_deserializer=identity)
        reply = parse(health(field(1, "envoy.service.auth.v3.Authorization"), timeout=5))
        out["health"] = first(reply, 1, 0)

        # Three 15 MiB CheckRequests at once: past the server's budget for requests still arriving,
        # the oldest is answered before it has been sent whole (then RST_STREAM NO_ERROR).
        big = check_request(dict(base, **{"x-pad": "p" * (15 * 1024 * 1024)}))
        futures = [call.future(big, timeout=30) for _ in range(3)]
        answered_early = []
        for f in futures:
            try:
                reply = check_response(f.result())
                answered_early.append({"code": reply["code"], "body": json.loads(reply["denied"]["body"])["code"]})
            except grpc.RpcError as e:
                answered_early.append({"error": e.code().name})
        out["answered_early"] = answered_early
    print(json.dumps(out))


if __name__ == "__main__":
    main()
