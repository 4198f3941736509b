import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createClientRegistry } from '../src/clients.ts';
import type { ClientIdentity } from '../src/config.ts';

const client = (i: number): ClientIdentity => ({ name: `c${i}`, key: `pk_client_${String(i).padStart(8, '0')}_abcdefgh`, secrets: [`secret-${i}-0123456789abcdef`] });

test('each client is found by its own key and by no other; a key one character off, empty, absent or over 1024 characters is none', () => {
  const clients = Array.from({ length: 1000 }, (_, i) => client(i));
  const registry = createClientRegistry(clients);
  assert.equal(registry.size, 1000);
  for (const c of clients) assert.equal(registry.findByKey(c.key), c);
  const key = clients[500]!.key;
  for (const wrong of [key.slice(0, -1), `${key}x`, `${key.slice(0, -1)}H`, key.toUpperCase(), ` ${key}`, '', undefined, 'x'.repeat(1025)]) {
    assert.equal(registry.findByKey(wrong), null, JSON.stringify(wrong));
  }
  assert.equal(createClientRegistry([]).findByKey(key), null);
});

test('finding a key costs the same with 20,000 clients as with one (generous bound: under 10 times)', () => {
  // A file may list 10,000 clients (clients-file.ts). Compared with each client in turn, a key took
  // hundreds of times longer among 20,000 than alone; by its digest, about the same.
  const time = (registry: ReturnType<typeof createClientRegistry>, key: string) => {
    const started = process.hrtime.bigint();
    for (let i = 0; i < 2000; i++) registry.findByKey(key);
    return Number(process.hrtime.bigint() - started);
  };
  const many = Array.from({ length: 20_000 }, (_, i) => client(i));
  const one = createClientRegistry([many[19_999]!]);
  const all = createClientRegistry(many);
  const last = many[19_999]!.key;
  // Warm both, then take each one's best of three, alternating.
  time(one, last);
  time(all, last);
  const best = { one: Infinity, all: Infinity };
  for (let round = 0; round < 3; round++) {
    best.one = Math.min(best.one, time(one, last));
    best.all = Math.min(best.all, time(all, last));
  }
  assert.ok(best.all < 10 * best.one, `2,000 finds took ${(best.all / 1e6).toFixed(1)} ms among 20,000 clients against ${(best.one / 1e6).toFixed(1)} ms with one`);
});
