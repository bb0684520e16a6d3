// The current cart per merchant, kept by the worker from GA4 cart events.

import { itemKey, LIMITS } from './signals.js';
import { FULL_CART_EVENTS } from './ga4.js';

/** The merchant's cart after one GA4 cart event (pure). */
export function updateCart(previous, event, currency, items, now = Date.now()) {
  let lines = previous && previous.currency === currency ? previous.items.map((it) => ({ ...it })) : [];
  if (FULL_CART_EVENTS.has(event)) {
    lines = [];
    event = 'add_to_cart'; // merge duplicate lines of the full list below
  }
  for (const item of items) {
    const i = lines.findIndex((l) => itemKey(l) === itemKey(item));
    if (event === 'add_to_cart') {
      if (i < 0) {
        if (lines.length < LIMITS.items) lines.push({ ...item });
      } else {
        // Keep the newest name, price and category; add the quantities.
        const quantity = Math.min(lines[i].quantity + item.quantity, LIMITS.maxQuantity);
        lines[i] = { ...item, category: item.category ?? lines[i].category, quantity };
        if (lines[i].category === undefined) delete lines[i].category;
      }
    } else if (event === 'remove_from_cart' && i >= 0) {
      const quantity = lines[i].quantity - item.quantity;
      if (quantity >= 1) lines[i] = { ...lines[i], quantity };
      else lines.splice(i, 1);
    }
  }
  return { currency, items: lines, updatedAt: new Date(now).toISOString() };
}

