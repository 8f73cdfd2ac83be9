`timescale 1ns/1ps
// repq-hw reference RTL: integer average pool of one channel over T tokens (docs/ops/avg_pool.md).
//
//   S = sum of the T inputs x_t (signed, IN_W <= 32 bits), accumulated exactly in 64 bits;
//   y = round_div(S, T, mode)                  (rq_div_round: restoring division, tie test r vs T - r)
//
// Streaming: present one x per clock with in_valid, and in_last on the T-th value of the channel; the
// division starts on the next clock and y is valid with out_valid when it finishes. in_valid must stay
// low while busy. |S| <= T * 2^31 < 2^ITER with ITER = 32 + ceil(log2 T) (the default 63 covers T < 2^31).
module rq_avg_pool #(
    parameter integer IN_W = 16,
    parameter integer ITER = 63,
    parameter integer BPC  = 4
) (
    input  wire                   clk,
    input  wire                   rst,
    input  wire                   in_valid,
    input  wire                   in_last,
    input  wire signed [IN_W-1:0] x,
    input  wire        [31:0]     tokens,   // T >= 1
    input  wire        [1:0]      mode,
    output wire                   busy,
    output reg                    out_valid,
    output reg  signed [63:0]     y
);
    reg  signed [63:0] acc;
    reg                go;
    reg  signed [63:0] num;
    wire               div_busy, div_done;
    wire signed [63:0] quotient;

    rq_div_round #(.ITER(ITER), .BPC(BPC)) div (.clk(clk), .rst(rst), .start(go), .num(num),
        .den({32'd0, tokens}), .mode(mode), .busy(div_busy), .done(div_done), .result(quotient));

    assign busy = go | div_busy;

    always @(posedge clk) begin
        if (rst) begin
            acc <= 64'sd0;
            go <= 1'b0;
            out_valid <= 1'b0;
        end else begin
            go <= 1'b0;
            out_valid <= 1'b0;
            if (in_valid) begin
                if (in_last) begin
                    num <= acc + {{(64-IN_W){x[IN_W-1]}}, x};
                    acc <= 64'sd0;
                    go <= 1'b1;
                end else begin
                    acc <= acc + {{(64-IN_W){x[IN_W-1]}}, x};
                end
            end
            if (div_done) begin
                y <= quotient;
                out_valid <= 1'b1;
            end
        end
    end
endmodule
