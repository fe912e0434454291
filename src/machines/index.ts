/**
 * The engine's pure machines: address space, container and device lifecycles. The actor layer
 * supplies every effect with `machine.provide({ actors })` and subscribes to the emitted events.
 */
export * from './errors.js';
export * from './device.js';
export * from './container.js';
export * from './address-space.js';
