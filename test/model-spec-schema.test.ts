// Model specs are defined once, as TypeBox schemas in sdk/model-spec.ts: the wire names
// follow one rule, the runtime's JSON Schema and docs/models.md's field tables are
// generated from them (scripts/model-spec-schema.ts) and fail here when stale.
import { readFileSync } from 'node:fs';
import type { TObject, TSchema } from '@sinclair/typebox';
import { describe, expect, it } from 'vitest';
import { topk } from '../plugins/index.js';
import { type CNNSpec, type GPTSpec, MODEL_SPECS, type ModelSpec, MoESpec, runtimeSpec, wireName, wireSchema } from '../sdk/model-spec.js';
import { MODEL_DOCS, SPEC_SCHEMA, renderModelDocs, renderSchema } from '../scripts/model-spec-schema.js';

type Json = Record<string, unknown>;
const variant = (kind: string) => (wireSchema().oneOf as Json[]).find((o) => ((o.properties as Json).kind as Json).const === kind)!;
const props = (o: Json) => o.properties as Record<string, Json>;

describe('model spec schemas', () => {
  it('spec.schema.json, which the runtime checks specs against, is current (npx tsx scripts/model-spec-schema.ts)', () => {
    expect(readFileSync(SPEC_SCHEMA, 'utf8'), `${SPEC_SCHEMA} is stale: run npx tsx scripts/model-spec-schema.ts`).toBe(renderSchema());
  });

  it('docs/models.md\'s field tables are current and list every field of every kind', () => {
    const page = readFileSync(MODEL_DOCS, 'utf8');
    expect(page, 'docs/models.md is stale: run npx tsx scripts/model-spec-schema.ts').toBe(renderModelDocs(page));
    for (const schema of [...Object.values(MODEL_SPECS), MoESpec] as TObject[]) {
      for (const k of Object.keys(schema.properties)) expect(page).toContain(`| \`${k}\` |`);
    }
  });

  it('gives every field a help line, and every optional field a default unless it is an object', () => {
    for (const [kind, schema] of Object.entries({ ...MODEL_SPECS, moe: MoESpec }) as [string, TObject][]) {
      expect(schema.description, kind).toBeTruthy();
      const required = new Set(schema.required ?? []);
      for (const [k, s] of Object.entries(schema.properties as Record<string, TSchema>)) {
        expect(s.description, `${kind}.${k}`).toBeTruthy();
        if (!required.has(k) && s.type !== 'object') expect(s.default, `${kind}.${k} has no default`).not.toBeUndefined();
      }
    }
  });

  it('derives the wire names by one rule and sends them', () => {
    expect(wireName('inChannels')).toBe('in_channels');
    expect(wireName('mlpRatio')).toBe('mlp_ratio');
    expect(wireName('sizes')).toBe('sizes');
    expect(Object.keys(props(variant('cnn')))).toEqual(['kind', 'in_channels', 'image', 'channels', 'kernel', 'hidden', 'classes', 'seed']);
    expect(Object.keys(props(variant('gpt')))).toContain('mlp_ratio');
    const cnn: CNNSpec = { kind: 'cnn', inChannels: 3, image: [8, 8], channels: [4], classes: 2 };
    expect(runtimeSpec(cnn, 5)).toEqual({ kind: 'cnn', in_channels: 3, image: [8, 8], channels: [4], classes: 2, seed: 5 });
    const gpt: GPTSpec = { kind: 'gpt', vocab: 8, context: 4, mlpRatio: 2, moe: { experts: 2, hidden: 4, router: topk({ k: 1 }) } };
    const wire = runtimeSpec(gpt);
    expect(wire.mlp_ratio).toBe(2);
    // the router is sent as what its wire schema describes: its parameter specs under `params`
    const moe = props(props(variant('gpt')).moe);
    expect(Object.keys(wire.moe as Json).sort()).toEqual(Object.keys(moe).filter((k) => k in (wire.moe as Json)).sort());
    expect(Object.keys((wire.moe as { params: Json }).params)).toEqual(['gate']);
  });

  it('refuses a field its schema lacks, listing the schema\'s fields in order', () => {
    expect(() => runtimeSpec({ kind: 'cnn', image: [8, 8], channels: [4], classes: 2, hiden: 3 } as never))
      .toThrow("Model.build: spec field 'hiden' is not known; allowed: kind, inChannels, image, channels, kernel, hidden, classes");
    expect(() => runtimeSpec({ kind: 'gpt', vocab: 8, context: 4, moe: { experts: 2, hidden: 4, router: topk(), top: 1 } } as never))
      .toThrow("'moe.top' is not known; allowed: experts, hidden, every, router");
    expect(() => runtimeSpec({ kind: 'toString' } as never)).toThrow("spec field 'kind' must be one of mlp, cnn, gpt, moe, additive, factory");
  });

  it('types the specs from the schemas (Static<>)', () => {
    const specs: ModelSpec[] = [
      { kind: 'mlp', sizes: [4, 2], activation: 'gelu', bias: false, dropout: 0.1 },
      { kind: 'additive', linear: 2, relu: 3 },
      { kind: 'factory', ref: 'torch.nn:Linear', kwargs: { in_features: 2, out_features: 1 } },
    ];
    // @ts-expect-error an activation the schema does not list
    const bad: ModelSpec = { kind: 'mlp', sizes: [4, 2], activation: 'swish' };
    expect(specs.length + (bad ? 1 : 0)).toBe(4);
  });
});
