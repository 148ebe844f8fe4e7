/**
 * Configuration sources in ASP.NET's shape (reference sidecar-http-api §3): JSON settings files,
 * environment variables with `__` as the level separator, and command-line `--Key=value`. Each source
 * becomes a list of flat `A:B:0:C` entries; buildConfigTree layers them (later wins) into one
 * case-insensitive tree. Nothing here knows what a key means.
 */

/** Where a value came from, for messages (never the value itself). */
export type ConfigSourceName = string;

/** One flattened `key = value` pair. */
export interface ConfigEntry {
  /** `:`-separated path as the source spelled it. */
  readonly path: string;
  readonly value: string;
  readonly source: ConfigSourceName;
}

/** A node of the merged configuration; names keep the first casing seen, lookups are case-insensitive. */
export interface ConfigNode {
  /** Segment name in the first casing seen. */
  readonly name: string;
  /** Full path in first-seen casing. */
  readonly path: string;
  /** The node's own scalar value (a node may have both a value and children, as in .NET). */
  value?: string;
  source?: ConfigSourceName;
  /** Keyed by lower-case segment, in first-seen order. */
  readonly children: Map<string, ConfigNode>;
}

export type SourceResult = { readonly entries: ConfigEntry[]; readonly errors: string[] };

// ---------------------------------------------------------------------------------------------
// JSON with comments and trailing commas (ASP.NET reads appsettings with CommentHandling.Skip and
// AllowTrailingCommas). A small parser of our own gives line/column errors without echoing the
// file's text (which may hold a secret) and detects case-insensitive duplicate keys, as .NET does.

type JsonValue = null | boolean | string | { readonly raw: string } | JsonValue[] | Map<string, JsonValue>;

/**
 * Two values written under one name (case-insensitively): objects merge key by key, as ASP.NET's
 * JSON provider flattens both into `a:b` keys; anything else names one setting twice (undefined).
 */
function mergeSections(a: JsonValue, b: JsonValue): Map<string, JsonValue> | undefined {
  if (!(a instanceof Map) || !(b instanceof Map)) return undefined;
  const out = new Map(a);
  const names = new Map([...out.keys()].map((k) => [k.toLowerCase(), k] as const));
  for (const [key, value] of b) {
    const existing = names.get(key.toLowerCase());
    if (existing === undefined) {
      out.set(key, value);
      names.set(key.toLowerCase(), key);
      continue;
    }
    const merged = mergeSections(out.get(existing) as JsonValue, value);
    if (merged === undefined) return undefined;
    out.set(existing, merged);
  }
  return out;
}

class JsonSyntaxError extends Error {}

class JsonReader {
  private pos = 0;
  private readonly text: string;
  constructor(text: string) {
    this.text = text;
  }

  parseDocument(): JsonValue {
    this.skipTrivia();
    const value = this.parseValue();
    this.skipTrivia();
    if (this.pos < this.text.length) this.fail('unexpected content after the top-level value');
    return value;
  }

  private location(): string {
    let line = 1;
    let col = 1;
    for (let i = 0; i < this.pos && i < this.text.length; i++) {
      if (this.text[i] === '\n') { line++; col = 1; } else col++;
    }
    return `line ${line}, column ${col}`;
  }

  private fail(what: string): never {
    throw new JsonSyntaxError(`${what} at ${this.location()}`);
  }

  private skipTrivia(): void {
    const t = this.text;
    for (;;) {
      const c = t[this.pos];
      if (c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\uFEFF') { this.pos++; continue; }
      if (c === '/' && t[this.pos + 1] === '/') {
        while (this.pos < t.length && t[this.pos] !== '\n') this.pos++;
        continue;
      }
      if (c === '/' && t[this.pos + 1] === '*') {
        const end = t.indexOf('*/', this.pos + 2);
        if (end < 0) this.fail('unterminated /* comment');
        this.pos = end + 2;
        continue;
      }
      return;
    }
  }

  private parseValue(): JsonValue {
    const c = this.text[this.pos];
    if (c === '{') return this.parseObject();
    if (c === '[') return this.parseArray();
    if (c === '"') return this.parseString();
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return this.parseNumber();
    for (const [word, value] of [['true', true], ['false', false], ['null', null]] as const) {
      if (this.text.startsWith(word, this.pos)) { this.pos += word.length; return value; }
    }
    return this.fail(c === undefined ? 'unexpected end of file' : 'unexpected character');
  }

  private parseObject(): Map<string, JsonValue> {
    const out = new Map<string, JsonValue>();
    /** Lower-cased key → the key as first written. */
    const seen = new Map<string, string>();
    this.pos++; // {
    this.skipTrivia();
    while (this.text[this.pos] !== '}') {
      if (this.text[this.pos] !== '"') this.fail('expected a property name in double quotes');
      const keyAt = this.pos;
      const key = this.parseString();
      this.skipTrivia();
      if (this.text[this.pos] !== ':') this.fail('expected ":"');
      this.pos++;
      this.skipTrivia();
      const value = this.parseValue();
      const first = seen.get(key.toLowerCase());
      if (first === undefined) {
        seen.set(key.toLowerCase(), key);
        out.set(key, value);
      } else {
        // ASP.NET's JSON provider refuses a key only when it names the same value twice: two
        // objects under one name (a section written twice) are merged, key by key.
        const merged = mergeSections(out.get(first) as JsonValue, value);
        if (merged === undefined) { this.pos = keyAt; this.fail(`duplicate key "${key}" (keys are case-insensitive)`); }
        out.set(first, merged as JsonValue);
      }
      this.skipTrivia();
      if (this.text[this.pos] === ',') { this.pos++; this.skipTrivia(); continue; }
      if (this.text[this.pos] !== '}') this.fail('expected "," or "}"');
    }
    this.pos++; // }
    return out;
  }

  private parseArray(): JsonValue[] {
    const out: JsonValue[] = [];
    this.pos++; // [
    this.skipTrivia();
    while (this.text[this.pos] !== ']') {
      out.push(this.parseValue());
      this.skipTrivia();
      if (this.text[this.pos] === ',') { this.pos++; this.skipTrivia(); continue; }
      if (this.text[this.pos] !== ']') this.fail('expected "," or "]"');
    }
    this.pos++; // ]
    return out;
  }

  private parseString(): string {
    const t = this.text;
    let out = '';
    this.pos++; // opening quote
    for (;;) {
      const c = t[this.pos];
      if (c === undefined) this.fail('unterminated string');
      if (c === '"') { this.pos++; return out; }
      if (c === '\n' || c === '\r') this.fail('line break inside a string');
      if (c !== '\\') { out += c; this.pos++; continue; }
      const e = t[this.pos + 1];
      const simple: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
      if (e !== undefined && e in simple) { out += simple[e]; this.pos += 2; continue; }
      if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(t.slice(this.pos + 2, this.pos + 6))) {
        out += String.fromCharCode(parseInt(t.slice(this.pos + 2, this.pos + 6), 16));
        this.pos += 6;
        continue;
      }
      this.fail('invalid escape sequence');
    }
  }

  private parseNumber(): { raw: string } {
    const m = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/.exec(this.text.slice(this.pos));
    if (!m) this.fail('invalid number');
    this.pos += m[0].length;
    return { raw: m[0] }; // .NET keeps the number's text, so do we
  }
}

/** Parses JSON that may contain comments and trailing commas; the error names a line and column only. */
export function parseJsonWithComments(text: string): { ok: true; value: unknown } | { ok: false; error: string } {
  try {
    return { ok: true, value: new JsonReader(text).parseDocument() };
  } catch (err) {
    if (err instanceof JsonSyntaxError) return { ok: false, error: err.message };
    throw err;
  }
}

/** Flattens a parsed settings document into `A:B:0` entries (arrays by index, as ASP.NET does). */
export function flattenJson(value: unknown, source: ConfigSourceName): SourceResult {
  const entries: ConfigEntry[] = [];
  const errors: string[] = [];
  if (!(value instanceof Map)) {
    errors.push(`${source}: the top-level JSON value must be an object`);
    return { entries, errors };
  }
  const walk = (v: JsonValue, path: string): void => {
    if (v instanceof Map) {
      // An empty object still exists (it binds to a new instance in .NET), so record it with an empty value.
      if (v.size === 0 && path) entries.push({ path, value: '', source });
      for (const [k, child] of v) walk(child, path ? `${path}:${k}` : k);
    } else if (Array.isArray(v)) {
      if (v.length === 0) entries.push({ path, value: '', source });
      v.forEach((child, i) => walk(child, `${path}:${i}`));
    } else if (v === null) {
      entries.push({ path, value: '', source });
    } else if (typeof v === 'boolean') {
      entries.push({ path, value: v ? 'true' : 'false', source });
    } else if (typeof v === 'string') {
      entries.push({ path, value: v, source });
    } else {
      entries.push({ path, value: v.raw, source });
    }
  };
  walk(value as JsonValue, '');
  return { entries, errors };
}

/** Reads and flattens one settings file; `required` decides whether a missing file is an error. */
export function readSettingsFile(
  file: string,
  label: string,
  required: boolean,
  readText: (file: string) => string | undefined,
): SourceResult {
  let text: string | undefined;
  try {
    text = readText(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'read error';
    return { entries: [], errors: [`${label}: cannot read the settings file (${code})`] };
  }
  if (text === undefined) {
    return { entries: [], errors: required ? [`${label}: the settings file does not exist`] : [] };
  }
  const parsed = parseJsonWithComments(text);
  if (!parsed.ok) return { entries: [], errors: [`${label}: invalid JSON: ${parsed.error}`] };
  return flattenJson(parsed.value, label);
}

/**
 * All environment variables as entries, `__` → `:` (ASP.NET reads every variable, without prefix).
 * `hostPrefixes` are additionally read with the prefix removed (ASP.NET's host configuration), and
 * returned separately because they rank below the settings files.
 */
export function environmentEntries(env: Readonly<Record<string, string | undefined>>): { host: ConfigEntry[]; app: ConfigEntry[] } {
  const app: ConfigEntry[] = [];
  const dotnet: ConfigEntry[] = [];
  const aspnet: ConfigEntry[] = [];
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined || name === '') continue;
    const path = name.replace(/__/g, ':');
    app.push({ path, value, source: `environment variable ${name}` });
    const upper = name.toUpperCase();
    if (upper.startsWith('DOTNET_') && name.length > 7) dotnet.push({ path: path.slice(7), value, source: `environment variable ${name}` });
    if (upper.startsWith('ASPNETCORE_') && name.length > 11) aspnet.push({ path: path.slice(11), value, source: `environment variable ${name}` });
  }
  // WebApplicationBuilder (which Microsoft's sidecar uses) gives ASPNETCORE_ variables the lowest
  // precedence of its host sources since .NET 7 (aspnet/Announcements#498): DOTNET_ wins.
  return { host: [...aspnet, ...dotnet], app };
}

/**
 * Command-line arguments (the user arguments, i.e. `process.argv.slice(2)`) in ASP.NET's forms:
 * `--Key=value`, `--Key value`, `/Key=value`, `/Key value`, `Key=value`. Anything else is an error
 * that names the argument's position, never its text (it may be a secret).
 */
export function commandLineEntries(argv: readonly string[]): SourceResult {
  const entries: ConfigEntry[] = [];
  const errors: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const source = `command-line argument ${i + 1}`;
    let body: string;
    let prefixed = true;
    if (arg.startsWith('--')) body = arg.slice(2);
    else if (arg.startsWith('/')) body = arg.slice(1);
    else if (arg.startsWith('-')) {
      errors.push(`${source}: single-dash options are not supported; use --Key=value`);
      continue;
    } else { body = arg; prefixed = false; }
    const eq = body.indexOf('=');
    if (eq >= 0) {
      const key = body.slice(0, eq).trim();
      if (key === '') { errors.push(`${source}: missing key before "="`); continue; }
      entries.push({ path: key, value: body.slice(eq + 1), source });
      continue;
    }
    if (!prefixed) {
      errors.push(`${source}: not a configuration setting; use --Key=value`);
      continue;
    }
    if (body.trim() === '') { errors.push(`${source}: missing key`); continue; }
    if (i + 1 >= argv.length) { errors.push(`${source}: --${body} has no value`); continue; }
    entries.push({ path: body.trim(), value: argv[i + 1], source });
    i++;
  }
  return { entries, errors };
}

/** Creates an empty root node. */
export function emptyConfigTree(): ConfigNode {
  return { name: '', path: '', children: new Map() };
}

/** Layers entries into one tree; later entries override earlier ones, names keep their first casing. */
export function buildConfigTree(layers: readonly (readonly ConfigEntry[])[]): ConfigNode {
  const root = emptyConfigTree();
  for (const layer of layers) {
    for (const e of layer) {
      let node = root;
      for (const seg of e.path.split(':')) {
        const k = seg.toLowerCase();
        let child = node.children.get(k);
        if (!child) {
          child = { name: seg, path: node.path ? `${node.path}:${seg}` : seg, children: new Map() };
          node.children.set(k, child);
        }
        node = child;
      }
      node.value = e.value;
      node.source = e.source;
    }
  }
  return root;
}

/** The node at a `:` path (case-insensitive), if present. */
export function getNode(root: ConfigNode, path: string): ConfigNode | undefined {
  let node: ConfigNode | undefined = root;
  for (const seg of path.split(':')) {
    node = node.children.get(seg.toLowerCase());
    if (!node) return undefined;
  }
  return node;
}

/** Every node below `node` that carries a value, depth first, with its full path. */
export function leafPaths(node: ConfigNode): ConfigNode[] {
  const out: ConfigNode[] = [];
  const walk = (n: ConfigNode): void => {
    if (n.value !== undefined) out.push(n);
    for (const c of n.children.values()) walk(c);
  };
  for (const c of node.children.values()) walk(c);
  return out;
}
