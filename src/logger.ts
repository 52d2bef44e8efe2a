/**
 * The one way Trellis processes make their JSON logger: pino, with every field that could
 * carry a secret (tokens, webhook secrets, private keys, authorization headers) censored,
 * so a careless log call can never write one out.
 */
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';

/** Field paths censored in every log line. */
export const SECRET_LOG_PATHS = ['token', 'secret', 'privateKeyPem', '*.token', '*.secret', '*.privateKeyPem', 'authorization', '*.authorization', '*.headers.authorization'];

/** A logger writing JSON lines to `destination` (standard output by default). */
export function createLogger(base: Record<string, unknown>, options: Pick<LoggerOptions, 'level'> = {}, destination?: DestinationStream): Logger {
  const settings: LoggerOptions = { ...options, base, redact: { paths: SECRET_LOG_PATHS, censor: '[redacted]' } };
  return destination ? pino(settings, destination) : pino(settings);
}
