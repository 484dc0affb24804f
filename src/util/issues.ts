import type { z } from 'zod';

function describeValue(value: unknown): string {
  if (value === undefined) return 'missing';
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function valueAt(root: unknown, path: PropertyKey[]): unknown {
  let node: unknown = root;
  for (const part of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<PropertyKey, unknown>)[part];
  }
  return node;
}

/** Key names whose values (and everything under them) are secrets: never echoed in a message. */
const SECRET_KEY = /password$|passphrase$|token$|^secret$|privatekey$/i;

export function isSecretPath(path: readonly PropertyKey[]): boolean {
  return path.some((part) => typeof part === 'string' && SECRET_KEY.test(part));
}

/** Turns zod issues into lines like `postgres.port: got "abc", expected number`; values under secret keys are redacted. */
export function describeIssues(input: unknown, error: z.ZodError): string[] {
  return error.issues.map((issue) => {
    const path = issue.path.map(String).join('.') || '(top level)';
    if (issue.code === 'unrecognized_keys') {
      // An unknown key may be a misspelt secret: name it, never show its value.
      return `${path}: unknown key(s) ${issue.keys.map((k) => `"${k}"`).join(', ')}; remove or correct them`;
    }
    const value = valueAt(input, issue.path);
    const got = isSecretPath(issue.path) && value !== undefined ? '(value hidden: secret)' : describeValue(value);
    return `${path}: got ${got}; ${issue.message}`;
  });
}
