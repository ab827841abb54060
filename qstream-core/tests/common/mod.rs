pub mod smollm2;
