/**
 * `grpc.health.v1.Health` (Check, Watch, List) with a status per service name, for Kubernetes gRPC
 * probes and Envoy's `grpc_health_check` (reference envoy-ext-authz §3).
 *
 * No health.proto ships in our dependencies (grpc-health-check is not installed), so the four
 * messages of the gRPC health protocol are declared here as a protobufjs JSON descriptor; on the
 * wire they are identical to grpc/health/v1/health.proto.
 */
import * as grpc from '@grpc/grpc-js';
import { serviceDefinitionFromJson, type ServiceDefinition } from './protos.js';

export const HEALTH_SERVICE = 'grpc.health.v1.Health';

export type ServingStatus = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

const HEALTH_DESCRIPTOR = {
  nested: {
    grpc: {
      nested: {
        health: {
          nested: {
            v1: {
              nested: {
                HealthCheckRequest: { fields: { service: { type: 'string', id: 1 } } },
                HealthCheckResponse: {
                  fields: { status: { type: 'ServingStatus', id: 1 } },
                  nested: { ServingStatus: { values: { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } } },
                },
                HealthListRequest: { fields: {} },
                HealthListResponse: { fields: { statuses: { keyType: 'string', type: 'HealthCheckResponse', id: 1 } } },
                Health: {
                  methods: {
                    Check: { requestType: 'HealthCheckRequest', responseType: 'HealthCheckResponse' },
                    List: { requestType: 'HealthListRequest', responseType: 'HealthListResponse' },
                    Watch: { requestType: 'HealthCheckRequest', responseType: 'HealthCheckResponse', responseStream: true },
                  },
                },
              },
            },
          },
        },
      },
    },
  },
};

let healthService: ServiceDefinition | undefined;

/** The Health service definition (built once). */
export function healthServiceDefinition(): ServiceDefinition {
  healthService ??= serviceDefinitionFromJson(HEALTH_DESCRIPTOR, HEALTH_SERVICE);
  return healthService;
}

interface HealthCheckRequest { service?: string }
interface HealthCheckResponse { status: ServingStatus }
type WatchCall = grpc.ServerWritableStream<HealthCheckRequest, HealthCheckResponse>;

/**
 * Health state. Statuses come from `resolve(service)` (so they can be computed from live facts
 * such as `validator.ready()`); Watch streams are re-evaluated on `refresh()`.
 */
export class HealthService {
  readonly #resolve: (service: string) => ServingStatus | undefined;
  readonly #services: readonly string[];
  readonly #watchers = new Map<WatchCall, ServingStatus>();

  /** `resolve` returns undefined for a service name this server does not know (→ NOT_FOUND / SERVICE_UNKNOWN). */
  constructor(services: readonly string[], resolve: (service: string) => ServingStatus | undefined) {
    this.#services = services;
    this.#resolve = resolve;
  }

  /** Registers Check, Watch and List on a grpc-js server. */
  addToServer(server: grpc.Server): void {
    server.addService(healthServiceDefinition(), {
      Check: (call: grpc.ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>, callback: grpc.sendUnaryData<HealthCheckResponse>) => {
        const status = this.#resolve(call.request.service ?? '');
        if (status === undefined) callback({ code: grpc.status.NOT_FOUND, details: 'unknown service' });
        else callback(null, { status });
      },
      List: (_call: grpc.ServerUnaryCall<object, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const statuses: Record<string, HealthCheckResponse> = {};
        for (const s of this.#services) statuses[s] = { status: this.#resolve(s) ?? 'SERVICE_UNKNOWN' };
        callback(null, { statuses });
      },
      Watch: (call: WatchCall) => {
        const status = this.#resolve(call.request.service ?? '') ?? 'SERVICE_UNKNOWN';
        this.#watchers.set(call, status);
        call.on('cancelled', () => this.#watchers.delete(call));
        call.on('error', () => this.#watchers.delete(call));
        call.write({ status });
      },
    });
  }

  /** Sends the new status to every Watch stream whose service changed. */
  refresh(): void {
    for (const [call, last] of this.#watchers) {
      const status = this.#resolve(call.request.service ?? '') ?? 'SERVICE_UNKNOWN';
      if (status !== last) {
        this.#watchers.set(call, status);
        call.write({ status });
      }
    }
  }

  /** Whether any service is not yet SERVING (drives the readiness poll). */
  anyNotServing(): boolean {
    return this.#services.some((s) => this.#resolve(s) !== 'SERVING');
  }

  /** Ends every open Watch stream (shutdown). */
  endWatches(): void {
    for (const call of this.#watchers.keys()) call.end();
    this.#watchers.clear();
  }
}
