/**
 * OpenAPI 3.1 description of the identity API, served at /openapi/v1.json in Development
 * (Microsoft serves one there too). A test compares it with ROUTES.
 */
const problem = { $ref: '#/components/schemas/ProblemDetails' };
const apiName = { name: 'apiName', in: 'path', required: true, schema: { type: 'string' } };
const overrideParams = [
  { name: 'optionsOverride.Scopes', in: 'query', required: false, schema: { type: 'array', items: { type: 'string' } }, style: 'form', explode: true },
  { name: 'optionsOverride.RequestAppToken', in: 'query', required: false, schema: { type: 'boolean' } },
  { name: 'AgentIdentity', in: 'query', required: false, schema: { type: 'string' } },
  { name: 'AgentUsername', in: 'query', required: false, schema: { type: 'string' } },
  { name: 'AgentUserId', in: 'query', required: false, schema: { type: 'string', format: 'uuid' } },
];
const errors = {
  '400': { description: 'No scopes found', content: { 'application/problem+json': { schema: problem } } },
  '401': { description: 'Unauthorized (no/invalid token, or Entra refused the token request)', content: { 'application/problem+json': { schema: problem } } },
  '500': { description: 'Unexpected error', content: { 'application/problem+json': { schema: problem } } },
};
const authHeaderOp = (operationId: string) => ({
  operationId,
  parameters: [apiName, ...overrideParams],
  responses: { '200': { description: 'Authorization header', content: { 'application/json': { schema: { $ref: '#/components/schemas/AuthorizationHeaderResult' } } } }, ...errors },
});
const downstreamOp = (operationId: string) => ({
  operationId,
  parameters: [apiName, ...overrideParams],
  requestBody: { required: false, content: { '*/*': { schema: {} } } },
  responses: { '200': { description: 'Downstream response', content: { 'application/json': { schema: { $ref: '#/components/schemas/DownstreamApiResult' } } } }, ...errors },
});

export const OPENAPI_DOCUMENT = {
  openapi: '3.1.1',
  // Microsoft's own title (reference §2): generated clients are named after it, so a drop-in keeps it.
  info: { title: 'Microsoft.Identity.Web.Sidecar | v1', version: '1.0.0' },
  paths: {
    '/Validate': {
      get: {
        operationId: 'ValidateAuthorizationHeader',
        responses: {
          '200': { description: 'Validated token', content: { 'application/json': { schema: { $ref: '#/components/schemas/ValidateAuthorizationHeaderResult' } } } },
          '401': { description: 'Missing or invalid token (WWW-Authenticate, no body)' },
          '403': { description: 'IDW10203 scope gate (text/plain)' },
        },
      },
    },
    '/AuthorizationHeader/{apiName}': { get: authHeaderOp('AuthorizationHeader') },
    '/AuthorizationHeaderUnauthenticated/{apiName}': { get: authHeaderOp('AuthorizationHeaderUnauthenticated') },
    '/DownstreamApi/{apiName}': { post: downstreamOp('DownstreamApi') },
    '/DownstreamApiUnauthenticated/{apiName}': { post: downstreamOp('DownstreamApiUnauthenticated') },
    // Answers every method (HEAD without a body), as Microsoft's MapHealthChecks; documented as GET.
    '/healthz': { get: { operationId: 'Healthz', description: 'Liveness. Any method is answered (HEAD without a body).', responses: { '200': { description: 'Healthy', content: { 'text/plain': { schema: { type: 'string' } } } } } } },
  },
  components: {
    schemas: {
      ProblemDetails: {
        type: 'object',
        properties: { type: { type: 'string' }, title: { type: 'string' }, status: { type: 'integer' }, detail: { type: 'string' }, code: { type: 'string' } },
      },
      ValidateAuthorizationHeaderResult: {
        type: 'object',
        required: ['protocol', 'token', 'claims'],
        properties: { protocol: { type: 'string' }, token: { type: 'string' }, claims: { type: 'object' } },
      },
      AuthorizationHeaderResult: { type: 'object', required: ['authorizationHeader'], properties: { authorizationHeader: { type: 'string' } } },
      DownstreamApiResult: {
        type: 'object',
        required: ['statusCode', 'headers', 'content'],
        properties: {
          statusCode: { type: 'integer' },
          headers: { type: 'object', additionalProperties: { type: 'array', items: { type: 'string' } } },
          content: { type: ['string', 'null'] },
          contentEncoding: { type: 'string', enum: ['base64'] },
        },
      },
    },
  },
} as const;
