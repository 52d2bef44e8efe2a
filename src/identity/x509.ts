/**
 * @peculiar/x509, loaded the one way that works: its dependency-injection container needs
 * the `reflect-metadata` polyfill evaluated first, and it signs with Node's WebCrypto.
 * Everything that builds certificates or requests imports it from here.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

export { x509 };
