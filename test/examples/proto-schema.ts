/**
 * Strict schema check of Envoy YAML against Envoy's own protos (from @grpc/grpc-js-xds deps):
 * every key must be a field of the message it sits in, recursively, including inside `Any`
 * values (`typed_config` with `@type`). Envoy itself rejects unknown fields at startup, so a typo
 * here is a config that would never load.
 */
import protobuf from 'protobufjs';
import type * as Protobuf from 'protobufjs';
import { parseEnvoyProtos } from '../../src/extauthz/protos.js';

/** The extension protos the examples use in `typed_config`; the bootstrap closure does not import them. */
export const EXTENSION_PROTOS = [
  'envoy/config/bootstrap/v3/bootstrap.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls.proto',
];

let root: Protobuf.Root | undefined;

/** Loads the bootstrap and extension protos once, with proto field names kept as written. */
export function envoyRoot(): Protobuf.Root {
  root ??= parseEnvoyProtos(EXTENSION_PROTOS);
  return root;
}

const TYPE_URL_PREFIX = 'type.googleapis.com/';
const INT_TYPES = new Set(['int32', 'uint32', 'sint32', 'fixed32', 'sfixed32', 'int64', 'uint64', 'sint64', 'fixed64', 'sfixed64']);
const DURATION = /^-?\d+(\.\d{1,9})?s$/;

/** Validates `value` as a `typeName` message in proto3 JSON/YAML form; returns every problem found. */
export function validateMessage(typeName: string, value: unknown, where = '$'): string[] {
  const type = envoyRoot().lookupType(typeName);
  const errors: string[] = [];
  walkMessage(type, value, where, errors);
  return errors;
}

function walkMessage(type: Protobuf.Type, value: unknown, where: string, errors: string[]): void {
  switch (type.fullName) {
    case '.google.protobuf.Any': {
      if (!isObject(value) || typeof value['@type'] !== 'string') {
        errors.push(`${where}: Any needs an "@type"`);
        return;
      }
      const url = value['@type'];
      if (!url.startsWith(TYPE_URL_PREFIX)) {
        errors.push(`${where}.@type: "${url}" is not a type.googleapis.com URL`);
        return;
      }
      let inner: Protobuf.Type;
      try {
        inner = envoyRoot().lookupType(url.slice(TYPE_URL_PREFIX.length));
      } catch {
        errors.push(`${where}.@type: unknown type ${url}`);
        return;
      }
      const { ['@type']: _drop, ...rest } = value;
      walkMessage(inner, rest, where, errors);
      return;
    }
    case '.google.protobuf.Duration':
      if (typeof value !== 'string' || !DURATION.test(value)) errors.push(`${where}: Duration must be a string like "0.25s"`);
      return;
    case '.google.protobuf.Struct':
      if (!isObject(value)) errors.push(`${where}: Struct must be a mapping`);
      return;
    case '.google.protobuf.Value':
    case '.google.protobuf.ListValue':
      return;
    case '.google.protobuf.BoolValue':
      if (typeof value !== 'boolean') errors.push(`${where}: expected a boolean`);
      return;
    case '.google.protobuf.UInt32Value':
    case '.google.protobuf.UInt64Value':
    case '.google.protobuf.Int32Value':
    case '.google.protobuf.Int64Value':
    case '.google.protobuf.DoubleValue':
    case '.google.protobuf.FloatValue':
      if (typeof value !== 'number' && !(typeof value === 'string' && /^-?\d+(\.\d+)?$/.test(value))) errors.push(`${where}: expected a number`);
      return;
    case '.google.protobuf.StringValue':
      if (typeof value !== 'string') errors.push(`${where}: expected a string`);
      return;
  }
  if (!isObject(value)) {
    errors.push(`${where}: ${type.name} must be a mapping`);
    return;
  }
  for (const oneof of type.oneofsArray) {
    const set = oneof.oneof.filter((name) => name in value);
    if (set.length > 1) errors.push(`${where}: ${set.join(' and ')} are one of "${oneof.name}"; set only one`);
  }
  for (const [key, v] of Object.entries(value)) {
    const field = type.fields[key];
    if (!field) {
      errors.push(`${where}.${key}: unknown field of ${type.fullName.slice(1)}`);
      continue;
    }
    if (field.options?.deprecated) errors.push(`${where}.${key}: deprecated field of ${type.fullName.slice(1)}`);
    const at = `${where}.${key}`;
    if (field.map) {
      if (!isObject(v)) {
        errors.push(`${at}: map must be a mapping`);
        continue;
      }
      for (const [k, item] of Object.entries(v)) walkValue(field, item, `${at}[${k}]`, errors);
    } else if (field.repeated) {
      if (!Array.isArray(v)) {
        errors.push(`${at}: repeated field must be a list`);
        continue;
      }
      v.forEach((item, i) => walkValue(field, item, `${at}[${i}]`, errors));
    } else {
      walkValue(field, v, at, errors);
    }
  }
}

function walkValue(field: Protobuf.Field, value: unknown, where: string, errors: string[]): void {
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Type) return walkMessage(resolved, value, where, errors);
  if (resolved instanceof protobuf.Enum) {
    if (typeof value === 'string' ? !(value in resolved.values) : typeof value !== 'number') errors.push(`${where}: "${String(value)}" is not a ${resolved.name} value`);
    return;
  }
  if (field.type === 'string' || field.type === 'bytes') {
    if (typeof value !== 'string') errors.push(`${where}: expected a string`);
  } else if (field.type === 'bool') {
    if (typeof value !== 'boolean') errors.push(`${where}: expected a boolean`);
  } else if (INT_TYPES.has(field.type)) {
    if (!(typeof value === 'number' && Number.isInteger(value)) && !(typeof value === 'string' && /^-?\d+$/.test(value))) errors.push(`${where}: expected an integer`);
  } else if (field.type === 'double' || field.type === 'float') {
    if (typeof value !== 'number') errors.push(`${where}: expected a number`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
