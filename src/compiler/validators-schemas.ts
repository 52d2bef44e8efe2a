/**
 * The JSON Schemas shipped with Trellis (schema/*.schema.json, the same files editors use),
 * and which one each kind is validated against. scripts/build-validators.ts compiles them
 * into src/compiler/validators.generated.js; nothing compiles them while Trellis runs.
 * Imported rather than read from disk so that bundles carry them.
 */
import type { SpecKind } from '../spec/types.ts';

import accessPolicySchema from '../../schema/accesspolicy.schema.json' with { type: 'json' };
import commonSchema from '../../schema/common.schema.json' with { type: 'json' };
import grpcRouteSchema from '../../schema/grpcroute.schema.json' with { type: 'json' };
import httpRouteSchema from '../../schema/httproute.schema.json' with { type: 'json' };
import meshSchema from '../../schema/mesh.schema.json' with { type: 'json' };
import referenceGrantSchema from '../../schema/referencegrant.schema.json' with { type: 'json' };
import serviceSchema from '../../schema/service.schema.json' with { type: 'json' };
import trafficPolicySchema from '../../schema/trafficpolicy.schema.json' with { type: 'json' };
import trafficTestSchema from '../../schema/traffictest.schema.json' with { type: 'json' };
import trellisSchema from '../../schema/trellis.schema.json' with { type: 'json' };

/** Every schema file of `schema/`, by file name (a test checks none is missing). */
export const SCHEMAS: Readonly<Record<string, unknown>> = {
  'accesspolicy.schema.json': accessPolicySchema,
  'common.schema.json': commonSchema,
  'grpcroute.schema.json': grpcRouteSchema,
  'httproute.schema.json': httpRouteSchema,
  'mesh.schema.json': meshSchema,
  'referencegrant.schema.json': referenceGrantSchema,
  'service.schema.json': serviceSchema,
  'trafficpolicy.schema.json': trafficPolicySchema,
  'traffictest.schema.json': trafficTestSchema,
  'trellis.schema.json': trellisSchema,
};

/** The schema file each kind's documents are validated against. */
export const SCHEMA_FILES: Readonly<Record<SpecKind, string>> = {
  Mesh: 'mesh.schema.json',
  Service: 'service.schema.json',
  HTTPRoute: 'httproute.schema.json',
  TrafficPolicy: 'trafficpolicy.schema.json',
  AccessPolicy: 'accesspolicy.schema.json',
  TrafficTest: 'traffictest.schema.json',
  ReferenceGrant: 'referencegrant.schema.json',
  GRPCRoute: 'grpcroute.schema.json',
};
