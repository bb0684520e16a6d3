// GA4 events, JSON-LD orders and products, and the per-merchant cart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ga4Category, ga4Currency, ga4Items } from '../lib/ga4.js';
import { categoryForItem, flattenNodes, ldCategory, ordersFrom, productsFrom } from '../lib/jsonld.js';
import { updateCart } from '../lib/cart.js';

test('ga4Category joins item_category..item_category5', () => {
  assert.equal(ga4Category({ item_category: 'Apparel', item_category2: 'Shoes', item_category3: '', item_category5: 'Trail' }), 'Apparel > Shoes > Trail');
  assert.equal(ga4Category({}), '');
});

test('ga4Items normalises items and fills categories from JSON-LD', () => {
  const ecommerce = {
    currency: 'usd',
    items: [
      { item_id: 'A', item_name: 'Alpha', price: 10.005, quantity: 2, item_category: 'Toys' },
      { item_id: 'B', item_name: 'Beta', price: '3' },
      { item_id: 'C', item_name: 'No price' },
      'junk',
    ],
  };
  const products = [{ name: 'Beta', sku: 'B', category: 'Games > Board' }];
  assert.deepEqual(ga4Items(ecommerce, products), [
    { name: 'Alpha', sku: 'A', category: 'Toys', price: '10.005', quantity: 2 },
    { name: 'Beta', sku: 'B', category: 'Games > Board', price: '3', quantity: 1 },
  ]);
  assert.equal(ga4Currency(ecommerce), 'USD');
  assert.equal(ga4Currency({ items: [{ currency: 'JPY' }] }), 'JPY');
  assert.equal(ga4Currency({}), null);
});

test('ldCategory reads text, things and lists', () => {
  assert.equal(ldCategory('Apparel & Accessories > Shoes'), 'Apparel & Accessories > Shoes');
  assert.equal(ldCategory({ '@type': 'CategoryCode', name: 'Shoes' }), 'Shoes');
  assert.equal(ldCategory(['https://example.com/c/1', '187', 'Boots']), 'Boots');
  assert.equal(ldCategory(undefined), '');
});

test('categoryForItem matches by sku, then name, then the only product', () => {
  const two = [
    { name: 'One', sku: '1', category: 'C1' },
    { name: 'Two', sku: '2', category: 'C2' },
  ];
  assert.equal(categoryForItem(two, { sku: '2' }), 'C2');
  assert.equal(categoryForItem(two, { name: 'one' }), 'C1');
  assert.equal(categoryForItem(two, { name: 'three' }), '');
  assert.equal(categoryForItem([two[0]], { name: 'whatever' }), 'C1');
});

test('productsFrom finds products in @graph and nested nodes', () => {
  const blocks = [
    { '@context': 'https://schema.org', '@graph': [{ '@type': 'WebPage', mainEntity: { '@type': 'Product', name: 'Mug', sku: 'M', category: 'Kitchen' } }] },
    { '@type': ['Product', 'Thing'], name: 'No category' },
  ];
  assert.deepEqual(productsFrom(flattenNodes(blocks)), [{ name: 'Mug', sku: 'M', category: 'Kitchen' }]);
});

test('ordersFrom reads acceptedOffer orders', () => {
  const [o] = ordersFrom(
    flattenNodes([
      {
        '@context': 'http://schema.org',
        '@type': 'Order',
        orderNumber: 'A-1',
        priceCurrency: 'EUR',
        price: '74.90',
        acceptedOffer: [
          { '@type': 'Offer', price: '59.90', priceCurrency: 'EUR', eligibleQuantity: { value: 1 }, itemOffered: { '@type': 'Product', name: 'Trail Runner', sku: 'TR-1', category: 'Shoes' } },
          { '@type': 'Offer', price: 7.5, eligibleQuantity: { value: 2 }, itemOffered: { '@type': 'Product', name: 'Wool Socks' } },
        ],
      },
    ]),
  );
  assert.deepEqual(o, {
    orderId: 'A-1',
    currency: 'EUR',
    total: '74.90',
    items: [
      { name: 'Trail Runner', sku: 'TR-1', category: 'Shoes', price: '59.9', quantity: 1 },
      { name: 'Wool Socks', price: '7.5', quantity: 2 },
    ],
  });
});

test('ordersFrom reads orderedItem orders with totalPaymentDue', () => {
  const [o] = ordersFrom(
    flattenNodes({
      '@graph': [
        {
          '@type': 'schema:Order',
          orderNumber: 77,
          totalPaymentDue: { '@type': 'PriceSpecification', price: 24.5, priceCurrency: 'GBP' },
          orderedItem: [
            { '@type': 'OrderItem', orderQuantity: 3, orderedItem: { '@type': 'Product', name: 'Mug', offers: { price: 8.1666 } } },
            { '@type': 'Product', name: 'Coaster', offers: [{ price: '0' }] },
          ],
        },
      ],
    }),
  );
  assert.equal(o.orderId, '77');
  assert.equal(o.currency, 'GBP');
  assert.equal(o.total, 24.5);
  assert.deepEqual(o.items, [
    { name: 'Mug', price: '8.1666', quantity: 3 },
    { name: 'Coaster', price: '0', quantity: 1 },
  ]);
});

const shoe = { name: 'Shoe', sku: 'S', category: 'Shoes', price: '50', quantity: 1 };
const sock = { name: 'Sock', sku: 'K', price: '5', quantity: 2 };

test('updateCart adds, merges and removes lines', () => {
  let cart = updateCart(undefined, 'add_to_cart', 'EUR', [shoe]);
  cart = updateCart(cart, 'add_to_cart', 'EUR', [sock, { ...shoe, price: '45' }]);
  assert.deepEqual(cart.items, [
    { ...shoe, price: '45', quantity: 2 },
    sock,
  ]);
  cart = updateCart(cart, 'remove_from_cart', 'EUR', [{ ...sock, quantity: 1 }]);
  assert.equal(cart.items[1].quantity, 1);
  cart = updateCart(cart, 'remove_from_cart', 'EUR', [{ ...sock, quantity: 5 }]);
  assert.deepEqual(cart.items.map((i) => i.sku), ['S']);
  // Removing what is not there changes nothing.
  assert.deepEqual(updateCart(cart, 'remove_from_cart', 'EUR', [{ name: 'Other', price: '1', quantity: 1 }]).items, cart.items);
});

test('view_cart and begin_checkout replace the cart; a new currency starts over', () => {
  let cart = updateCart(undefined, 'add_to_cart', 'EUR', [shoe]);
  cart = updateCart(cart, 'view_cart', 'EUR', [sock, sock]);
  assert.deepEqual(cart.items, [{ ...sock, quantity: 4 }]);
  cart = updateCart(cart, 'add_to_cart', 'USD', [shoe]);
  assert.deepEqual(cart, { currency: 'USD', items: [shoe], updatedAt: cart.updatedAt });
});
